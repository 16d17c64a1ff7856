//! A bundle: every policy file of a directory, validated and versioned together.
//!
//! Loading has three steps, each collecting findings rather than stopping at the first:
//! 1. [`read_files`] lists the directory (recursively, skipping hidden entries) and reads the
//!    bytes of every `*.yaml`/`*.yml` file;
//! 2. every file is parsed (`yaml.rs`) and decoded (`decode.rs`);
//! 3. checks across documents: duplicate names, references, the default objective, layers.
//!
//! Only when no step found an error does a [`Bundle`] exist: it is all-or-nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::decode::{Decoded, Decoder, Doc, RefKind};
use crate::finding::{Finding, Findings, Pos};
use crate::model::*;
use crate::text::did_you_mean;
use crate::yaml::parse_stream;

/// How deep [`read_files`] descends into subdirectories. Policy repositories group files in a
/// folder or two; the bound protects against pathological trees.
const MAX_DIR_DEPTH: usize = 8;

/// Files larger than this are refused: policies are small, and the bound keeps a stray data
/// file from being parsed.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One policy file's path and bytes, as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The directory as given, joined with the file's path inside it.
    pub path: PathBuf,
    /// The file's content.
    pub bytes: Vec<u8>,
}

/// Reading a bundle directory failed (as opposed to the files being wrong).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The directory or a file in it could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_FILE_BYTES`].
    #[error("{} is larger than {} bytes; policy files are small", path.display(), MAX_FILE_BYTES)]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
}

impl ReadError {
    /// The error as a finding on the path it concerns, for callers that report everything as
    /// findings.
    pub fn to_finding(&self) -> Finding {
        let path = match self {
            ReadError::Io { path, .. } | ReadError::TooLarge { path } => path,
        };
        let message = match self {
            ReadError::Io { source, .. } => format!("cannot read: {source}"),
            ReadError::TooLarge { .. } => {
                format!("larger than {MAX_FILE_BYTES} bytes; policy files are small")
            }
        };
        Finding::error(path, Pos::NONE, message)
    }
}

/// Whether a directory entry is part of the bundle's visible content. Hidden entries are
/// skipped: editors' swap files, `.git`, and the `..data` and `..2024_…` entries by which
/// Kubernetes mounts a ConfigMap (its visible `file.yaml -> ..data/file.yaml` links are read
/// instead, so each file is read once, through the link that is swapped atomically).
fn visible(name: &str) -> bool {
    !name.starts_with('.') && !name.ends_with('~')
}

fn is_policy_file(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Lists and reads every `*.yaml` and `*.yml` file under `dir`, recursively, skipping hidden
/// entries (names starting with `.`, such as a ConfigMap's `..data`, and `*~` backups) and
/// following symbolic links to files but not to directories (which could form cycles). Files
/// come back sorted by path.
pub fn read_files(dir: &Path) -> Result<Vec<SourceFile>, ReadError> {
    let mut out = Vec::new();
    walk(dir, dir, 0, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<SourceFile>) -> Result<(), ReadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReadError::Io { path, source }
    };
    let entries = fs::read_dir(dir).map_err(io(dir))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        names.push(entry.file_name());
    }
    names.sort();
    for name in names {
        let Some(text) = name.to_str() else { continue };
        if !visible(text) {
            continue;
        }
        let path = dir.join(&name);
        let link_meta = fs::symlink_metadata(&path).map_err(io(&path))?;
        if link_meta.is_dir() {
            if depth < MAX_DIR_DEPTH {
                walk(root, &path, depth + 1, out)?;
            }
            continue;
        }
        if !is_policy_file(text) {
            continue;
        }
        // Follows a symbolic link; a dangling one is an error, since the file it names is
        // missing.
        let meta = fs::metadata(&path).map_err(io(&path))?;
        if !meta.is_file() {
            continue;
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(ReadError::TooLarge { path });
        }
        let bytes = fs::read(&path).map_err(io(&path))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(ReadError::TooLarge { path });
        }
        out.push(SourceFile { path, bytes });
    }
    let _ = root;
    Ok(())
}

/// A digest of raw file contents (paths and bytes). It identifies a bundle that failed to load,
/// which has no canonical content and so no version; it is never equal to a valid bundle's
/// version.
pub fn content_digest(files: &[SourceFile]) -> String {
    let mut sorted: Vec<&SourceFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    h.update(b"tern-raw-v1\0");
    for f in sorted {
        let p = f.path.to_string_lossy();
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
        h.update((f.bytes.len() as u64).to_le_bytes());
        h.update(&f.bytes);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A validated set of policies with a version.
///
/// The planner reads `caps`, `objectives`, `channels` (quiet hours, budgets), `experiments`,
/// `priorities` and `replans`; the server reads `generators` and `replans`. Every list is sorted by name.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The SHA-256 (hex) of [`Bundle::canonical_json`]: the same policies have the same version
    /// whatever the files, their order or their formatting.
    pub version: String,
    /// The directory it was loaded from.
    pub dir: PathBuf,
    /// The files it was loaded from, sorted.
    pub files: Vec<PathBuf>,
    /// `kind: Channel` documents.
    pub channels: Vec<Channel>,
    /// `kind: Category` documents (empty: categories are not checked).
    pub categories: Vec<Category>,
    /// `kind: Caps` documents.
    pub caps: Vec<CapSet>,
    /// `kind: Objective` documents; one is named `default`.
    pub objectives: Vec<Objective>,
    /// `kind: Generator` documents.
    pub generators: Vec<Generator>,
    /// `kind: Experiment` documents.
    pub experiments: Vec<Experiment>,
    /// `kind: Replan` documents.
    pub replans: Vec<Replan>,
    /// `kind: Priority` documents: what each declared priority class bypasses.
    pub priorities: Vec<PriorityClass>,
    /// The `kind: Schema` document, if any: the shapes expressions were checked against.
    pub schema: Option<Schema>,
    /// Warnings found while loading (rules that can never bind, and so on).
    pub warnings: Findings,
}

impl Bundle {
    /// Loads, validates and versions every policy file under `dir`. Fails with every finding
    /// (warnings included) when any is an error, including a directory that cannot be read.
    pub fn load(dir: impl AsRef<Path>) -> Result<Bundle, Findings> {
        let dir = dir.as_ref();
        let files = read_files(dir).map_err(|e| Findings(vec![e.to_finding()]))?;
        Bundle::from_files(dir, &files)
    }

    /// Validates and versions files already read (the watcher reads once, and validates what it
    /// read, so that a file changing in between cannot mix two states).
    pub fn from_files(dir: &Path, files: &[SourceFile]) -> Result<Bundle, Findings> {
        let mut decoded = Decoded::default();
        if files.is_empty() {
            decoded.findings.push(
                Finding::error(dir, Pos::NONE, "no policy files (*.yaml, *.yml) found")
                    .with_hint("a bundle is a directory of YAML files with `apiVersion: tern/v1`"),
            );
        }
        for file in files {
            decode_file(file, &mut decoded);
        }
        cross_checks(dir, &mut decoded);
        let mut findings = Findings(std::mem::take(&mut decoded.findings));
        findings.sort();
        if findings.has_errors() {
            return Err(findings);
        }
        let mut bundle = Bundle {
            version: String::new(),
            dir: dir.to_path_buf(),
            files: files.iter().map(|f| f.path.clone()).collect(),
            channels: Vec::new(),
            categories: Vec::new(),
            caps: Vec::new(),
            objectives: Vec::new(),
            generators: Vec::new(),
            experiments: Vec::new(),
            replans: Vec::new(),
            priorities: Vec::new(),
            schema: None,
            warnings: findings,
        };
        for doc in decoded.docs {
            match doc {
                Doc::Channel(d) => bundle.channels.push(d),
                Doc::Category(d) => bundle.categories.push(d),
                Doc::Caps(d) => bundle.caps.push(d),
                Doc::Objective(d) => bundle.objectives.push(d),
                Doc::Generator(d) => bundle.generators.push(d),
                Doc::Experiment(d) => bundle.experiments.push(d),
                Doc::Replan(d) => bundle.replans.push(d),
                Doc::Priority(d) => bundle.priorities.push(d),
                Doc::Schema(d) => bundle.schema = Some(d),
            }
        }
        bundle
            .channels
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        bundle
            .categories
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        bundle
            .caps
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        bundle
            .objectives
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        bundle
            .generators
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        bundle
            .experiments
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        bundle
            .replans
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        bundle.priorities.sort_by_key(|p| p.class);
        bundle.version = version_of(&bundle.canonical_json());
        Ok(bundle)
    }

    /// The first 12 hex digits of the version, for logs and messages.
    pub fn short_version(&self) -> &str {
        self.version.get(..12).unwrap_or(&self.version)
    }

    /// Every document's canonical JSON (see `model.rs`), sorted by kind and name: what the
    /// version hashes and what the database stores.
    pub fn documents(&self) -> Vec<Json> {
        let mut docs = Vec::new();
        docs.extend(self.channels.iter().map(Channel::canonical));
        docs.extend(self.categories.iter().map(Category::canonical));
        docs.extend(self.caps.iter().map(CapSet::canonical));
        docs.extend(self.objectives.iter().map(Objective::canonical));
        docs.extend(self.generators.iter().map(Generator::canonical));
        docs.extend(self.experiments.iter().map(Experiment::canonical));
        docs.extend(self.replans.iter().map(Replan::canonical));
        docs.extend(self.priorities.iter().map(PriorityClass::canonical));
        docs.extend(self.schema.iter().map(Schema::canonical));
        docs
    }

    /// `{"apiVersion": "tern/v1", "documents": [...]}` with every default filled in and every
    /// spelling normalised. Object keys are sorted (serde_json's map is ordered), so its compact
    /// serialisation is canonical.
    pub fn canonical_json(&self) -> Json {
        json!({ "apiVersion": API_VERSION, "documents": self.documents() })
    }

    /// A channel by name.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.metadata.name == name)
    }

    /// An objective by name.
    pub fn objective(&self, name: &str) -> Option<&Objective> {
        self.objectives.iter().find(|o| o.metadata.name == name)
    }

    /// The objective named `default`, which every valid bundle has.
    pub fn default_objective(&self) -> Option<&Objective> {
        self.objective(DEFAULT)
    }

    /// A cap set by name.
    pub fn cap_set(&self, name: &str) -> Option<&CapSet> {
        self.caps.iter().find(|c| c.metadata.name == name)
    }

    /// The cap set named `default`, if any (a bundle without one has no per-user caps outside
    /// experiments).
    pub fn default_caps(&self) -> Option<&CapSet> {
        self.cap_set(DEFAULT)
    }

    /// The `kind: Priority` document of a class, if the bundle declares one.
    pub fn priority(&self, class: Priority) -> Option<&PriorityClass> {
        self.priorities.iter().find(|p| p.class == class)
    }

    /// Whether the class's `kind: Priority` document bypasses `what`.
    pub fn bypasses(&self, class: Priority, what: Bypass) -> bool {
        self.priority(class).is_some_and(|p| p.bypasses(what))
    }

    /// Whether the class bypasses anything, which makes it urgent: sent as soon as its
    /// bypasses allow, and planned as soon as it arrives.
    pub fn urgent(&self, class: Priority) -> bool {
        self.priority(class).is_some_and(|p| !p.bypass.is_empty())
    }

    /// Whether a cap set holds messages of `class` back: not when the set lists the class in
    /// `exempt`, nor when the class bypasses `caps` (every set).
    pub fn caps_hold(&self, set: &CapSet, class: Priority) -> bool {
        !set.exempt.contains(&class) && !self.bypasses(class, Bypass::Caps)
    }

    /// A generator by name.
    pub fn generator(&self, name: &str) -> Option<&Generator> {
        self.generators.iter().find(|g| g.metadata.name == name)
    }

    /// An experiment by name.
    pub fn experiment(&self, name: &str) -> Option<&Experiment> {
        self.experiments.iter().find(|e| e.metadata.name == name)
    }

    /// The experiments a user is in, each with the user's arm, in experiment-name order.
    ///
    /// An experiment without a layer admits a user when [`unit_hash`]`("traffic:" + salt,
    /// user)` is below its `traffic`. The experiments of a layer, sorted by name, take
    /// consecutive ranges of [`unit_hash`]`("layer:" + layer, user)`, each as wide as its
    /// `traffic` (the check guarantees they fit in [0, 1)), so a user is in at most one of
    /// them. The arm is then [`Experiment::arm_for`].
    pub fn assignments(&self, user_id: &str) -> Vec<(&Experiment, &Arm)> {
        let mut out = Vec::new();
        for e in &self.experiments {
            let admitted = match &e.layer {
                None => unit_hash(&format!("traffic:{}", e.salt), user_id) < e.traffic,
                Some(layer) => {
                    let u = unit_hash(&format!("layer:{layer}"), user_id);
                    let mut lower = 0.0;
                    let mut inside = false;
                    // `self.experiments` is sorted by name, so this walk sees the layer's
                    // experiments in the same order for every user.
                    for other in self
                        .experiments
                        .iter()
                        .filter(|o| o.layer.as_deref() == Some(layer.as_str()))
                    {
                        let upper = lower + other.traffic;
                        if other.metadata.name == e.metadata.name {
                            inside = lower <= u && u < upper;
                            break;
                        }
                        lower = upper;
                    }
                    inside
                }
            };
            if admitted {
                if let Some(arm) = e.arm_for(user_id) {
                    out.push((e, arm));
                }
            }
        }
        out
    }
}

/// The name of the objective (and cap set) that applies when no experiment arm says otherwise.
pub const DEFAULT: &str = "default";

/// The version of a canonical JSON value: SHA-256 of its compact serialisation, in hex.
pub fn version_of(canonical: &Json) -> String {
    hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

fn decode_file(file: &SourceFile, decoded: &mut Decoded) {
    let path = &file.path;
    let text = match std::str::from_utf8(&file.bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &file.bytes[..e.valid_up_to()];
            let valid = std::str::from_utf8(valid).unwrap_or("");
            let line = valid.matches('\n').count() + 1;
            let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            decoded.findings.push(
                Finding::error(path, Pos::new(line, column), "the file is not valid UTF-8")
                    .with_hint("policy files are UTF-8 text"),
            );
            decoded.unreadable.push(path.clone());
            return;
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains('\0') {
        decoded.findings.push(Finding::error(
            path,
            Pos::NONE,
            "the file contains NUL bytes; it is not a text file",
        ));
        decoded.unreadable.push(path.clone());
        return;
    }
    match parse_stream(text) {
        Ok(docs) => Decoder::new(path, decoded).file(&docs),
        Err(e) => {
            decoded.unreadable.push(path.clone());
            decoded.findings.push(Finding::error(
                path,
                e.pos,
                format!("YAML syntax error: {}", e.message),
            ));
        }
    }
}

fn cross_checks(dir: &Path, d: &mut Decoded) {
    // Duplicate names, per kind.
    let mut first: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, decl) in d.declared.iter().enumerate() {
        match first.get(&(decl.kind, decl.name.as_str())) {
            Some(&j) => {
                let f = &d.declared[j];
                d.findings.push(
                    Finding::error(
                        &decl.file,
                        decl.pos,
                        format!("duplicate {} `{}`", decl.kind, decl.name),
                    )
                    .with_hint(format!(
                        "first defined at {}:{}:{}",
                        f.file.display(),
                        f.pos.line,
                        f.pos.column
                    )),
                );
            }
            None => {
                first.insert((decl.kind, decl.name.as_str()), i);
            }
        }
    }
    // The planner keeps one bit per channel.
    if let Some(extra) = d
        .declared
        .iter()
        .filter(|x| x.kind == "Channel")
        .nth(tern_core::limits::MAX_CHANNELS)
    {
        d.findings.push(Finding::error(
            &extra.file,
            extra.pos,
            format!(
                "a bundle declares at most {} channels; `{}` is one more",
                tern_core::limits::MAX_CHANNELS,
                extra.name
            ),
        ));
    }
    // References.
    let names = |kind: &str| -> Vec<&str> {
        d.declared
            .iter()
            .filter(|x| x.kind == kind)
            .map(|x| x.name.as_str())
            .collect()
    };
    let categories_declared = d.declared.iter().any(|x| x.kind == "Category");
    let mut found = Vec::new();
    // A file that could not be parsed may declare what the others refer to: an unknown name
    // would most likely follow from its syntax error, so those are held back, and said so once.
    let mut held_back = 0usize;
    for r in &d.references {
        if r.to == RefKind::Category && !categories_declared {
            continue;
        }
        let known = names(r.to.kind());
        if known.contains(&r.name.as_str()) {
            continue;
        }
        if !d.unreadable.is_empty() {
            held_back += 1;
            continue;
        }
        let message = format!("unknown {} `{}`", r.to.kind(), r.name);
        let f = Finding::error(&r.file, r.pos, message);
        let f = match did_you_mean(&r.name, known.iter().copied()) {
            Some(m) => f.with_hint(format!("did you mean `{m}`?")),
            None if known.is_empty() => f.with_hint(format!(
                "no {} is declared; add a document with `kind: {}`",
                r.to.kind(),
                r.to.kind()
            )),
            None => f.with_hint(format!("declared: {}", known.join(", "))),
        };
        found.push(f);
    }
    if let Some(file) = d.unreadable.first().filter(|_| held_back > 0) {
        found.push(
            Finding::warning(
                file,
                Pos::NONE,
                format!("{held_back} reference(s) to undeclared names were not checked"),
            )
            .with_hint("they may name documents of a file that could not be read; fix its syntax and check again"),
        );
    }
    // Expressions against the declared shapes; one Schema per bundle, so that a field has one
    // declaration.
    let declared: Vec<&crate::decode::Declared> =
        d.declared.iter().filter(|x| x.kind == "Schema").collect();
    for extra in declared.iter().skip(1) {
        found.push(
            Finding::error(
                &extra.file,
                extra.pos,
                format!("a second Schema document (`{}`)", extra.name),
            )
            .with_hint(format!(
                "a bundle has one Schema; merge it into `{}` ({}:{}:{})",
                declared[0].name,
                declared[0].file.display(),
                declared[0].pos.line,
                declared[0].pos.column
            )),
        );
    }
    let schema = d.docs.iter().find_map(|doc| match doc {
        Doc::Schema(s) => Some(s),
        _ => None,
    });
    // Only against the one Schema, and only when it decoded: checking against a broken or a
    // second schema would report fields that are declared, as follow-on errors.
    if let (Some(schema), [_]) = (schema, declared.as_slice()) {
        found.extend(crate::shape::check(schema, &d.exprs, &d.events));
    }
    // The default objective.
    let has_docs = !d.declared.is_empty() && d.unreadable.is_empty();
    if has_docs
        && !d
            .declared
            .iter()
            .any(|x| x.kind == "Objective" && x.name == DEFAULT)
    {
        found.push(
            Finding::error(
                dir,
                Pos::NONE,
                "the bundle has no Objective named `default`",
            )
            .with_hint("the default objective values messages for users outside experiments"),
        );
    }
    // Layers: experiments in one layer share its users without overlap.
    let mut layers: BTreeMap<&str, Vec<&crate::decode::LayerUse>> = BTreeMap::new();
    for l in &d.layers {
        layers.entry(l.layer.as_str()).or_default().push(l);
    }
    for (layer, uses) in layers {
        let total: f64 = uses.iter().map(|u| u.traffic).sum();
        if total > 1.0 + 1e-9 {
            if let Some(last) = uses.last() {
                let list: Vec<String> = uses
                    .iter()
                    .map(|u| format!("{} {}", u.experiment, u.traffic))
                    .collect();
                found.push(
                    Finding::error(
                        &last.file,
                        last.pos,
                        format!("the experiments in layer `{layer}` take {total} of its users, more than 1"),
                    )
                    .with_hint(format!("lower their `traffic` ({})", list.join(", "))),
                );
            }
        }
    }
    d.findings.extend(found);
}
