//! Directories that hold private things: transcripts (people's mail) and the CA key.
//!
//! A missing one is created 0700. An existing one that others may enter is tightened when it
//! is one of imapscope's own defaults (`certs/`, `recordings/`, which a git checkout creates
//! 0755) and owned by the user running imapscope; any other directory (`--out /tmp`...) is
//! never changed, only reported, since it may be shared on purpose.

use std::io;
use std::path::Path;

/// Makes sure `dir` exists and, as far as is safe, that only its owner can enter it.
pub fn ensure(dir: &Path) -> io::Result<()> {
    if !dir.is_dir() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        return builder.create(dir);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(dir)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            return Ok(());
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let ours = meta.uid() == unsafe { libc::geteuid() };
        let default = dir == Path::new("certs") || dir == Path::new("recordings");
        if default && ours {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
            tracing::info!(
                "made {} private (mode {:o} -> {:o}): only you can list it now",
                dir.display(),
                mode,
                mode & 0o700
            );
        } else {
            tracing::warn!(
                "{} can be entered by others (mode {mode:o}); the files imapscope writes there \
                 are private (0600), but their names show who connected when: chmod 700 {}",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}
