//! The checked-in corpora (`fuzz/corpus/TARGET/`), and running a target over
//! inputs with each panic caught and named.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use crate::Target;

/// The corpus directory of the target called `name`.
pub fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

/// Every file of `path` (a file, or a directory's files in name order).
pub fn load(path: &Path) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    if path.is_file() {
        return Ok(vec![(path.to_path_buf(), std::fs::read(path)?)]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    files.retain(|p| p.is_file());
    files.sort();
    files
        .into_iter()
        .map(|p| std::fs::read(&p).map(|b| (p, b)))
        .collect()
}

/// Runs `target` on `input`: the panic's message if it panicked.
pub fn run_one(target: &Target, input: &[u8]) -> Result<(), String> {
    panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// A failing input.
#[derive(Debug)]
pub struct Failure {
    /// Where it came from (a corpus file, or the mutation loop's iteration).
    pub from: String,
    /// The input.
    pub input: Vec<u8>,
    /// The panic's message.
    pub message: String,
}

/// Runs `target` over `inputs`: how many ran, and every failure.
pub fn replay(target: &Target, inputs: &[(PathBuf, Vec<u8>)]) -> Vec<Failure> {
    inputs
        .iter()
        .filter_map(|(p, input)| {
            run_one(target, input).err().map(|message| Failure {
                from: p.display().to_string(),
                input: input.clone(),
                message,
            })
        })
        .collect()
}

/// Writes a failing input to `dir` as `TARGET-HASH` (FNV-1a of its bytes).
pub fn save(dir: &Path, target: &Target, input: &[u8]) -> io::Result<PathBuf> {
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}-{hash:016x}", target.name));
    std::fs::write(&path, input)?;
    Ok(path)
}
