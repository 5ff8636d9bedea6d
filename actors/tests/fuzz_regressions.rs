//! Replays the fuzz corpora and every input that once crashed a fuzz
//! target (`query_path`, `trojan`, `shadowsocks`), so what fuzzing found
//! stays fixed.

use std::path::{Path, PathBuf};

fn inputs(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn past_crashes_stay_fixed() {
    let files = inputs("regressions/query_path");
    assert!(files.len() >= 2);
    for file in files {
        ward_actors::dns::fuzzing::query_path(&std::fs::read(&file).unwrap());
    }
}

#[test]
fn the_fuzz_corpus_runs_clean() {
    let files = inputs("corpus/query_path");
    assert!(files.len() > 50, "the corpus is committed");
    for file in files {
        ward_actors::dns::fuzzing::query_path(&std::fs::read(&file).unwrap());
    }
}

#[test]
fn the_trojan_corpus_runs_clean() {
    let files = inputs("corpus/trojan");
    assert!(files.len() >= 20, "the corpus is committed");
    for file in files {
        ward_actors::dialer::trojan::fuzzing::udp_frames(&std::fs::read(&file).unwrap());
    }
}

#[test]
fn the_shadowsocks_fuzz_corpus_runs_clean() {
    let files = inputs("corpus/shadowsocks");
    assert!(files.len() >= 30, "the corpus is committed");
    for file in files {
        ward_actors::dialer::shadowsocks::fuzzing::shadowsocks(&std::fs::read(&file).unwrap());
    }
}
