//! A disk slower than the network: the transcript writer must not drop data, and imapscope
//! must not buffer without bound either. The relay slows down to the disk's pace instead
//! (a bounded queue between relay and recorder: back-pressure).
//!
//! The slow disk is real: a FUSE filesystem (mounted by this test, as root) that passes every
//! file through to a temporary directory and takes its time over each write. The upstream is
//! a scripted fake server that sends one large literal as fast as the socket takes it.

mod support;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
};
use imapscope::protocol::Side;
use imapscope::transcript::format::Record;
use support::*;

const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;

/// A flat passthrough filesystem whose writes go at `bytes_per_sec`.
struct SlowDisk {
    backing: PathBuf,
    bytes_per_sec: u64,
    inodes: HashMap<u64, OsString>,
    by_name: HashMap<OsString, u64>,
    files: HashMap<u64, File>,
    next: u64,
}

impl SlowDisk {
    fn new(backing: &Path, bytes_per_sec: u64) -> SlowDisk {
        SlowDisk {
            backing: backing.to_path_buf(),
            bytes_per_sec,
            inodes: HashMap::new(),
            by_name: HashMap::new(),
            files: HashMap::new(),
            next: 2,
        }
    }

    fn path(&self, ino: u64) -> Option<PathBuf> {
        if ino == ROOT {
            return Some(self.backing.clone());
        }
        self.inodes.get(&ino).map(|name| self.backing.join(name))
    }

    fn inode(&mut self, name: &OsStr) -> u64 {
        if let Some(&ino) = self.by_name.get(name) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.inodes.insert(ino, name.to_owned());
        self.by_name.insert(name.to_owned(), ino);
        ino
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let meta = std::fs::metadata(self.path(ino)?).ok()?;
        let time = |secs: i64| UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
        Some(FileAttr {
            ino,
            size: meta.size(),
            blocks: meta.blocks(),
            atime: time(meta.atime()),
            mtime: time(meta.mtime()),
            ctime: time(meta.ctime()),
            crtime: time(meta.ctime()),
            kind: if meta.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl Filesystem for SlowDisk {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent != ROOT || !self.backing.join(name).exists() {
            return reply.error(libc::ENOENT);
        }
        let ino = self.inode(name);
        match self.attr(ino) {
            Some(attr) => reply.entry(&TTL, &attr, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let Some(path) = self.path(ino) else {
            return reply.error(libc::ENOENT);
        };
        if let Some(mode) = mode {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
        }
        if let Some(size) = size
            && let Ok(f) = OpenOptions::new().write(true).open(&path)
        {
            let _ = f.set_len(size);
        }
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if parent != ROOT {
            return reply.error(libc::ENOENT);
        }
        let opened = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(mode & !umask & 0o7777)
            .open(self.backing.join(name));
        match opened {
            Ok(file) => {
                let ino = self.inode(name);
                self.files.insert(ino, file);
                match self.attr(ino) {
                    Some(attr) => reply.created(&TTL, &attr, 0, ino, 0),
                    None => reply.error(libc::EIO),
                }
            }
            Err(e) => reply.error(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let Some(path) = self.path(ino) else {
            return reply.error(libc::ENOENT);
        };
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => {
                self.files.insert(ino, file);
                reply.opened(ino, 0);
            }
            Err(e) => reply.error(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        // The slow part: every write takes as long as the disk's rate says.
        std::thread::sleep(Duration::from_secs_f64(
            data.len() as f64 / self.bytes_per_sec as f64,
        ));
        let Some(file) = self.files.get(&ino) else {
            return reply.error(libc::EBADF);
        };
        match file.write_all_at(data, offset.max(0) as u64) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _data: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(libc::ENOTDIR);
        }
        let names: Vec<OsString> = std::fs::read_dir(&self.backing)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default();
        for (i, name) in names.iter().enumerate().skip(offset as usize) {
            let child = self.inode(name);
            if reply.add(child, (i + 1) as i64, FileType::RegularFile, name) {
                break;
            }
        }
        reply.ok();
    }
}

#[test]
fn a_slow_disk_slows_the_relay_and_loses_nothing() {
    const LITERAL: usize = 96 << 20;
    const DISK_RATE: u64 = 24 << 20;
    if !Path::new("/dev/fuse").exists() {
        panic!("this test needs /dev/fuse (FUSE) to make a slow disk");
    }
    let backing = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    let session = fuser::spawn_mount2(
        SlowDisk::new(backing.path(), DISK_RATE),
        mountpoint.path(),
        &[MountOption::FSName("imapscope-slow-disk".into())],
    )
    .expect("mount the slow FUSE filesystem (needs root)");

    // The fake server: a greeting, then one FETCH with a 96 MiB literal, as fast as it goes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"* OK fake ready\r\n").unwrap();
        let mut line = [0u8; 64];
        let n = s.read(&mut line).unwrap();
        assert!(line[..n].starts_with(b"a1 FETCH"));
        s.write_all(format!("* 1 FETCH (BODY[] {{{LITERAL}}}\r\n").as_bytes())
            .unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
        for _ in 0..LITERAL / chunk.len() {
            s.write_all(&chunk).unwrap();
        }
        s.write_all(b")\r\na1 OK done\r\n").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });

    let scope = Imapscope::record(&upstream, mountpoint.path(), &[]);
    let pid = scope.pid();
    let mut c = TcpStream::connect(("127.0.0.1", scope.port())).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let started = Instant::now();
    c.write_all(b"a1 FETCH 1 BODY[]\r\n").unwrap();
    let mut received = Vec::with_capacity(LITERAL + 100);
    let mut buf = vec![0u8; 1 << 20];
    while !received.ends_with(b"a1 OK done\r\n") {
        let n = c.read(&mut buf).expect("the relay goes on");
        assert!(n > 0, "closed after {} bytes", received.len());
        received.extend_from_slice(&buf[..n]);
    }
    let relayed_in = started.elapsed();
    c.write_all(b"a2 LOGOUT\r\n").unwrap();
    drop(c);
    server.join().unwrap();
    let peak = memory_kib(pid, "VmHWM");

    // The client got every byte, unchanged.
    let header = format!("* OK fake ready\r\n* 1 FETCH (BODY[] {{{LITERAL}}}\r\n");
    assert!(received.starts_with(header.as_bytes()));
    assert_eq!(
        received.len(),
        header.len() + LITERAL + b")\r\na1 OK done\r\n".len()
    );

    // The transcript, read from the backing directory, holds every byte too: nothing dropped.
    let all = wait_for_ended(backing.path(), 1);
    let transcript = &all[0].1;
    let from_server = bytes_from(transcript, Side::Server);
    assert_eq!(
        from_server, received,
        "the transcript holds what was relayed"
    );
    let Some(Record::End(end)) = transcript.records.last() else {
        panic!("no end line");
    };
    assert_eq!(end.lost_bytes, 0, "no transcript bytes were dropped");

    // Back-pressure: the relay went at the disk's pace (the transcript is larger than the
    // literal, so at least LITERAL / DISK_RATE), and imapscope did not hold the difference.
    let disk_time = Duration::from_secs_f64(LITERAL as f64 / DISK_RATE as f64);
    eprintln!(
        "96 MiB through a {} MiB/s disk: relayed in {relayed_in:?} (disk alone {disk_time:?}), imapscope peak RSS {peak} KiB",
        DISK_RATE >> 20
    );
    assert!(
        relayed_in >= disk_time.mul_f64(0.6),
        "relayed in {relayed_in:?}, faster than the disk could take the transcript ({disk_time:?}): it was buffered"
    );
    assert!(
        peak < 64 * 1024,
        "imapscope's peak memory was {peak} KiB: the slow disk made it buffer"
    );
    drop(scope);
    drop(session);
}
