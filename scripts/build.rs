//! Cargo build script: records the commit sieve is built from and whether the tree held
//! uncommitted changes, for `sieve --version` and `sieve_build_info`, so a running binary
//! can be traced to its source. `SIEVE_COMMIT` (a Docker build argument, say) names the
//! commit where there is no git checkout; without either, both read `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SIEVE_COMMIT");
    // any change to what is built can change the tree's state
    for path in ["src", "Cargo.toml", "Cargo.lock", "scripts/build.rs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{branch}");
        }
    }
    let given = std::env::var("SIEVE_COMMIT").ok().filter(|c| !c.is_empty());
    let (commit, tree) = match (given, git(&["rev-parse", "HEAD"])) {
        (Some(commit), _) => (commit, "unknown"),
        (None, Some(commit)) => {
            let changed = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|status| !status.is_empty());
            (commit, if changed { "modified" } else { "clean" })
        }
        (None, None) => ("unknown".to_string(), "unknown"),
    };
    println!("cargo:rustc-env=SIEVE_COMMIT={commit}");
    println!("cargo:rustc-env=SIEVE_TREE={tree}");
}
