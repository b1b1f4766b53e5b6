#!/usr/bin/env bash
# A short fuzz run of every target in fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer).
#   scripts/fuzz.sh            every target for FUZZ_SECS seconds (default 10)
#   scripts/fuzz.sh tracker    one target
# Uses the stable toolchain: cargo-fuzz needs nightly-only flags, which RUSTC_BOOTSTRAP=1
# unlocks for this build only. The corpus starts from the committed fixtures and golden
# transcripts; a crash leaves its input in fuzz/artifacts/TARGET/ and fails the run: keep it
# in fuzz/regressions/TARGET/ (replayed by every run) and add a case to tests/robustness.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECS:-10}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(framer tokenizer tracker transcript_reader matcher)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  if ! cargo install --locked --quiet cargo-fuzz; then
    echo "fuzz: cargo-fuzz could not be installed (no crates.io?); skipping the fuzz run" >&2
    exit 0
  fi
fi
export RUSTC_BOOTSTRAP=1

# Seed corpora: real IMAP streams for the protocol targets, real transcripts for the reader.
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  case "$t" in
    transcript_reader) cp recordings/golden/*.jsonl "fuzz/corpus/$t/" ;;
    *) cp tests/fixtures/seed/* tests/fixtures/mail/*.eml "fuzz/corpus/$t/" ;;
  esac
done

cd fuzz
cargo fuzz build -O
for t in "${targets[@]}"; do
  echo "== fuzz $t (${secs}s)"
  log="$(mktemp)"
  status=0
  # Earlier finds (fuzz/regressions/TARGET) run first, then the fuzzing proper.
  mkdir -p "regressions/$t"
  cargo fuzz run -O "$t" "corpus/$t" "regressions/$t" -- -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -max_len=65536 \
    >"$log" 2>&1 || status=$?
  grep -E '^Done' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $t failed (exit $status); its input is in fuzz/artifacts/$t/" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
done
