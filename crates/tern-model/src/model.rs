//! A trained model: inference, and the artifact bytes the registry stores.
//!
//! # Inference
//! [`Model::predict`] cuts the rows into chunks of [`Model::chunk_rows`] that rayon scores in
//! parallel. burn's Flex backend only spreads one matrix product over cores when it is large
//! (m·n·k ≥ 192³), and one huge batch is slower than several medium ones (allocation and cache
//! effects), so the splitting is ours. Each chunk runs on the [`Engine`] chosen: the fused pass
//! (default) or burn's Flex backend on an inference copy of the module (no autodiff graph).
//!
//! # Artifact format
//! `b"TERNMODL"`, a little-endian `u32` format number, a little-endian `u32` header length, the
//! header as JSON (feature spec, architecture, metrics, training window and summary, a checksum),
//! then every parameter as little-endian `f32` in [`Architecture`]'s order. The weights are in a
//! format tern owns rather than burn's record format: artifacts live in the database for as long
//! as anyone may want to roll back to them, across burn upgrades (0.22 alone replaced the whole
//! record system), and reading them must refuse damaged bytes with an error, never panic.

use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::TrainingWindow;
use crate::error::ModelError;
use crate::eval::Metrics;
use crate::features::{FeatureMatrix, FeatureSpec};
use crate::fused::{Fused, SCRATCH};
use crate::network::{to_vec, Architecture, Network};
use crate::summary::TrainingSummary;
use crate::value::ValueFunction;
use crate::HEADS;
use tern_core::fnv1a64;

const MAGIC: &[u8; 8] = b"TERNMODL";
/// 3: an optional value function in the header; 2 (five heads, no value function) still reads.
/// Format 1 had four heads and is refused: retrain.
const FORMAT: u32 = 3;
const OLDEST_FORMAT: u32 = 2;

/// Rows per chunk when scoring in parallel with [`Engine::Burn`]. Measured on the 2-core
/// development machine (512 to 4,096 tried): large enough that burn's per-operation overhead is
/// amortised, small enough that a layer's activations stay in cache and a 4,096-row batch still
/// splits over two cores.
pub const BURN_CHUNK_ROWS: usize = 2048;

/// Rows per chunk with [`Engine::Fused`], which has almost no per-call overhead and so gains
/// from finer splitting (measured as for [`BURN_CHUNK_ROWS`]).
pub const FUSED_CHUNK_ROWS: usize = 1024;

/// Which implementation [`Model::predict`] runs. Both compute the same function of the same
/// weights (a test holds them to within float rounding of each other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// burn's Flex backend on an inference copy of the module (no autodiff), chunks in parallel.
    /// The default: it beats PyTorch on the CPU by 2.6x at batch 4,096 here
    /// (`docs/benchmarks.md`), well past what a replan needs, and it is the same code that
    /// training validates with.
    #[default]
    Burn,
    /// The same matrix-product kernels burn's Flex backend calls, with bias and ReLU fused in
    /// place on cache-sized tiles and no allocation per call (see [`fused`](crate::fused)):
    /// about 10% faster again at batch 4,096 and 3x at batch 1, for callers that score one
    /// candidate at a time.
    Fused,
}

/// A trained (or loaded) model, ready to score.
#[derive(Debug)]
pub struct Model {
    spec: FeatureSpec,
    arch: Architecture,
    params: Vec<Vec<f32>>,
    network: Network,
    fused: Fused,
    device: Device,
    /// `None`: the engine's default.
    chunk_rows: Option<usize>,
    engine: Engine,
    /// How the model did on its validation period.
    pub metrics: Option<Metrics>,
    /// The period it was trained and validated on.
    pub window: Option<TrainingWindow>,
    /// How training went (settings, epochs, losses).
    pub training: Option<TrainingSummary>,
    /// The long-term value of a user's state, when it was fitted with the network.
    pub value: Option<ValueFunction>,
}

impl Clone for Model {
    fn clone(&self) -> Self {
        Model {
            spec: self.spec.clone(),
            arch: self.arch,
            params: self.params.clone(),
            network: Network::from_params(&self.arch, &self.params, &self.device),
            fused: self.fused.clone(),
            device: self.device.clone(),
            chunk_rows: self.chunk_rows,
            engine: self.engine,
            metrics: self.metrics.clone(),
            window: self.window,
            training: self.training.clone(),
            value: self.value.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    spec: FeatureSpec,
    architecture: Architecture,
    metrics: Option<Metrics>,
    window: Option<TrainingWindow>,
    training: Option<TrainingSummary>,
    #[serde(default)]
    value: Option<ValueFunction>,
    /// FNV-1a 64 of the parameter bytes, in hex: catches truncation and corruption.
    weights_fnv1a64: String,
}

impl Model {
    /// Builds a model from parameter arrays (the trainer's output, or an artifact's).
    pub(crate) fn from_params(
        spec: FeatureSpec,
        arch: Architecture,
        params: Vec<Vec<f32>>,
    ) -> Result<Model, ModelError> {
        arch.check()?;
        if arch.input != spec.width() {
            return Err(ModelError::Artifact(format!(
                "the network reads {} features but the feature spec declares {}",
                arch.input,
                spec.width()
            )));
        }
        let shapes = arch.param_shapes();
        if params.len() != shapes.len() {
            return Err(ModelError::Artifact(format!(
                "expected {} parameter arrays, got {}",
                shapes.len(),
                params.len()
            )));
        }
        for (p, s) in params.iter().zip(&shapes) {
            let n: usize = s.iter().product();
            if p.len() != n {
                return Err(ModelError::Shape {
                    what: "parameter array",
                    expected: n,
                    got: p.len(),
                });
            }
            if p.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::Artifact(
                    "a weight is not a finite number".into(),
                ));
            }
        }
        let device = Device::flex();
        let network = Network::from_params(&arch, &params, &device);
        let fused = Fused::new(arch, params.clone());
        Ok(Model {
            spec,
            arch,
            params,
            network,
            fused,
            device,
            chunk_rows: None,
            engine: Engine::default(),
            metrics: None,
            window: None,
            training: None,
            value: None,
        })
    }

    /// The feature spec this model reads; encode candidates with it.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    pub fn architecture(&self) -> Architecture {
        self.arch
    }

    /// The version of the features this model accepts.
    pub fn feature_version(&self) -> &str {
        self.spec.version()
    }

    /// Rows per parallel chunk: the one set, or the engine's default.
    pub fn chunk_rows(&self) -> usize {
        self.chunk_rows.unwrap_or(match self.engine {
            Engine::Burn => BURN_CHUNK_ROWS,
            Engine::Fused => FUSED_CHUNK_ROWS,
        })
    }

    /// Changes the rows per parallel chunk (at least 1); for tuning on other machines.
    pub fn set_chunk_rows(&mut self, rows: usize) {
        self.chunk_rows = Some(rows.max(1));
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Chooses the implementation that scores rows.
    pub fn set_engine(&mut self, engine: Engine) {
        self.engine = engine;
    }

    /// All parameters, in [`Architecture`]'s storage order (for tests and diagnostics).
    pub fn params(&self) -> &[Vec<f32>] {
        &self.params
    }

    /// Scores every row of `features`: `out[i]` gets the probabilities of row `i`, in
    /// [`Head::ALL`](crate::Head::ALL) order. Refuses rows encoded under another feature version.
    pub fn predict(
        &self,
        features: &FeatureMatrix,
        out: &mut [[f32; HEADS]],
    ) -> Result<(), ModelError> {
        self.predict_rows(
            features.version(),
            features.as_slice(),
            features.rows(),
            out,
        )
    }

    /// Like [`predict`](Self::predict), for rows the caller encoded into its own buffer with a
    /// spec of version `version`.
    pub fn predict_rows(
        &self,
        version: &str,
        features: &[f32],
        rows: usize,
        out: &mut [[f32; HEADS]],
    ) -> Result<(), ModelError> {
        if version != self.spec.version() {
            return Err(ModelError::FeatureVersionMismatch {
                model: self.spec.version().to_string(),
                features: version.to_string(),
            });
        }
        let width = self.spec.width();
        if features.len() != rows.saturating_mul(width) {
            return Err(ModelError::Shape {
                what: "features (rows × width)",
                expected: rows.saturating_mul(width),
                got: features.len(),
            });
        }
        if out.len() != rows {
            return Err(ModelError::Shape {
                what: "prediction output (one per row)",
                expected: rows,
                got: out.len(),
            });
        }
        if rows == 0 {
            return Ok(());
        }
        let chunk = self.chunk_rows();
        if rows <= chunk {
            self.forward_chunk(features, out);
        } else {
            out.par_chunks_mut(chunk)
                .zip(features.par_chunks(chunk * width))
                .for_each(|(out, x)| self.forward_chunk(x, out));
        }
        Ok(())
    }

    fn forward_chunk(&self, x: &[f32], out: &mut [[f32; HEADS]]) {
        match self.engine {
            Engine::Burn => self.forward_burn(x, out),
            Engine::Fused => SCRATCH.with(|s| match s.try_borrow_mut() {
                Ok(mut s) => self.fused.forward(x, out, &mut s),
                // Only reachable if scoring re-entered itself on this thread; stay correct.
                Err(_) => self.fused.forward(x, out, &mut Default::default()),
            }),
        }
    }

    /// Scores one chunk with burn on the inference device. Non-finite inputs come out as
    /// non-finite predictions rather than a panic; the planner's value guard drops them.
    fn forward_burn(&self, x: &[f32], out: &mut [[f32; HEADS]]) {
        let rows = out.len();
        let t = Tensor::<2>::from_data(
            TensorData::new(x.to_vec(), [rows, self.spec.width()]),
            &self.device,
        );
        let p = to_vec(sigmoid(self.network.forward(t)).into_data());
        for (o, p) in out.iter_mut().zip(p.chunks_exact(HEADS)) {
            o.copy_from_slice(p);
        }
    }

    /// The artifact: everything needed to score again, and to judge the model, in one buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let mut weights = Vec::with_capacity(self.params.iter().map(Vec::len).sum::<usize>() * 4);
        for p in &self.params {
            for x in p {
                weights.extend_from_slice(&x.to_le_bytes());
            }
        }
        let header = Header {
            spec: self.spec.clone(),
            architecture: self.arch,
            metrics: self.metrics.clone(),
            window: self.window,
            training: self.training.clone(),
            value: self.value.clone(),
            weights_fnv1a64: format!("{:016x}", fnv1a64(&weights)),
        };
        let header = serde_json::to_vec(&header)
            .map_err(|e| ModelError::Artifact(format!("cannot encode the header: {e}")))?;
        let header_len = u32::try_from(header.len())
            .map_err(|_| ModelError::Artifact("header too large".into()))?;
        let mut out = Vec::with_capacity(16 + header.len() + weights.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&header_len.to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&weights);
        Ok(out)
    }

    /// Reads an artifact written by [`to_bytes`](Self::to_bytes). Damaged or foreign bytes, a
    /// newer format, or a feature spec whose encoding this code no longer produces are errors.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelError> {
        let bad = |m: &str| ModelError::Artifact(m.to_string());
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("not a tern model (missing the TERNMODL header)"));
        }
        let format = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if !(OLDEST_FORMAT..=FORMAT).contains(&format) {
            return Err(ModelError::Artifact(format!(
                "artifact format {format} is not supported by this tern (it reads formats {OLDEST_FORMAT} to {FORMAT})"
            )));
        }
        let header_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
        let rest = &bytes[16..];
        if rest.len() < header_len {
            return Err(bad("truncated header"));
        }
        let (header, weights) = rest.split_at(header_len);
        // A spec whose stored version this code no longer derives fails here, with the
        // feature-version message inside.
        let header: Header = serde_json::from_slice(header)
            .map_err(|e| ModelError::Artifact(format!("unreadable header: {e}")))?;
        if format!("{:016x}", fnv1a64(weights)) != header.weights_fnv1a64 {
            return Err(bad(
                "the weights do not match their checksum (truncated or damaged)",
            ));
        }
        header.architecture.check()?;
        let shapes = header.architecture.param_shapes();
        let total: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        if weights.len() != total * 4 {
            return Err(ModelError::Shape {
                what: "weight bytes",
                expected: total * 4,
                got: weights.len(),
            });
        }
        let mut floats = weights
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let params = shapes
            .iter()
            .map(|s| floats.by_ref().take(s.iter().product()).collect())
            .collect();
        let mut model = Model::from_params(header.spec, header.architecture, params)?;
        model.metrics = header.metrics;
        model.window = header.window;
        model.training = header.training;
        model.value = header.value;
        Ok(model)
    }
}
