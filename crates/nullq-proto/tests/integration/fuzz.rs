//! The bounded fuzz run of the test suite: each cargo-fuzz target in `fuzz/` runs for a fixed
//! time under libFuzzer (nightly toolchain, `cargo install cargo-fuzz`; `scripts/test` installs both).
//! A crash or a failed assertion in a target fails this test with libFuzzer's report.

use std::path::Path;
use std::process::Command;

fn fuzz(target: &str, seconds: u32) {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let out = Command::new("cargo")
        .current_dir(&fuzz_dir)
        .args(["+nightly", "fuzz", "run", target, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg("-rss_limit_mb=2048")
        // Keep the toolchain that runs this test from leaking into the nightly build.
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run cargo fuzz (install it: cargo install cargo-fuzz): {e}")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fuzz target {target} failed (needs `cargo install cargo-fuzz` and the nightly toolchain):\n{}",
        stderr.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    // libFuzzer's summary line proves it really ran.
    assert!(
        stderr.contains("Done ") && stderr.contains(" runs in "),
        "no libFuzzer summary:\n{stderr}"
    );
}

#[test]
fn fuzz_qmqp_request_decoder_for_45s() {
    fuzz("qmqp_request", 45);
}

#[test]
fn fuzz_envelope_parser_for_15s() {
    fuzz("envelope", 15);
}
