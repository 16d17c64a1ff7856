//! Feeds arbitrary bytes to the policy loader, as one file and split into two files at a byte
//! chosen by the input: loading must return a bundle or findings, never panic, hang or abort.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tern_policy::{Bundle, SourceFile};

fuzz_target!(|data: &[u8]| {
    let dir = Path::new("fuzz");
    let one = [SourceFile {
        path: dir.join("a.yaml"),
        bytes: data.to_vec(),
    }];
    let _ = Bundle::from_files(dir, &one);

    if let Some((&split, rest)) = data.split_first() {
        let at = usize::from(split) * rest.len() / 256;
        let (a, b) = rest.split_at(at);
        let two = [
            SourceFile {
                path: dir.join("a.yaml"),
                bytes: a.to_vec(),
            },
            SourceFile {
                path: dir.join("sub/b.yml"),
                bytes: b.to_vec(),
            },
        ];
        if let Ok(bundle) = Bundle::from_files(dir, &two) {
            // A valid bundle must also round-trip through the canonical form and the diff.
            let _ = bundle.canonical_json();
            assert!(tern_policy::diff(&bundle, &bundle).is_empty());
        }
    }
});
