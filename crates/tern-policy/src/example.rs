//! The example bundle (`policies/` of the repository), built in: `tern demo` runs it from any
//! directory, and the analyses and tests take it as their baseline policy.

use std::path::Path;

use crate::{Bundle, Findings, SourceFile};

/// Every file of the example bundle, by name.
pub const FILES: &[(&str, &str)] = &[
    ("caps.yaml", include_str!("../../../policies/caps.yaml")),
    (
        "categories.yaml",
        include_str!("../../../policies/categories.yaml"),
    ),
    (
        "channels.yaml",
        include_str!("../../../policies/channels.yaml"),
    ),
    (
        "experiments.yaml",
        include_str!("../../../policies/experiments.yaml"),
    ),
    (
        "generators.yaml",
        include_str!("../../../policies/generators.yaml"),
    ),
    (
        "objectives.yaml",
        include_str!("../../../policies/objectives.yaml"),
    ),
    (
        "priorities.yaml",
        include_str!("../../../policies/priorities.yaml"),
    ),
    (
        "replans.yaml",
        include_str!("../../../policies/replans.yaml"),
    ),
    ("schema.yaml", include_str!("../../../policies/schema.yaml")),
];

/// The documents of a YAML stream, as written (each from its first line to the next `---`);
/// blocks without a `kind:` line (comments) are left out.
pub fn split_documents(text: &str) -> Vec<&str> {
    text.split("\n---")
        .map(|d| d.trim_start_matches('\n'))
        .filter(|d| d.lines().any(|l| l.starts_with("kind:")))
        .collect()
}

/// A document's `kind:` as written.
pub fn kind_of(doc: &str) -> Option<&str> {
    doc.lines()
        .find_map(|l| l.strip_prefix("kind:"))
        .map(str::trim)
}

/// The example bundle without its experiments (so that every user is treated alike), and with
/// `objective` (a whole `kind: Objective` document) in place of its objectives when given.
/// Loaded in memory; nothing touches the disk.
pub fn without_experiments(objective: Option<&str>) -> Result<Bundle, Findings> {
    let dir = Path::new("example");
    let mut files: Vec<SourceFile> = FILES
        .iter()
        .filter_map(|(name, text)| {
            let kept: Vec<&str> = split_documents(text)
                .into_iter()
                .filter(|doc| {
                    let kind = kind_of(doc);
                    kind != Some("Experiment")
                        && !(kind == Some("Objective") && objective.is_some())
                })
                .collect();
            (!kept.is_empty()).then(|| SourceFile {
                path: dir.join(name),
                bytes: kept.join("\n---\n").into_bytes(),
            })
        })
        .collect();
    if let Some(doc) = objective {
        files.push(SourceFile {
            path: dir.join("zz-objective.yaml"),
            bytes: doc.as_bytes().to_vec(),
        });
    }
    Bundle::from_files(dir, &files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in bundle is the whole of `policies/`: a file added there and forgotten here
    /// would make the demo run other policies than the ones documented.
    #[test]
    fn the_built_in_files_are_every_file_of_the_example_bundle() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        let built_in: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(built_in, on_disk);
        for (name, text) in FILES {
            assert_eq!(
                *text,
                std::fs::read_to_string(format!("{dir}/{name}")).unwrap(),
                "{name}"
            );
        }
        let b = without_experiments(None).unwrap();
        assert!(b.experiments.is_empty() && !b.objectives.is_empty());
    }
}
