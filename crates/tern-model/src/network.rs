//! The network: a shared trunk and one sigmoid head per outcome.
//!
//! `input → hidden[0] → hidden[1]` with ReLU is the trunk every outcome shares: what makes a user
//! open a message is much the same as what makes them convert, and the rarer outcomes (loss of
//! reachability) borrow statistical strength from the common ones. The four heads are four
//! logistic regressions on the trunk's last layer. They are stored as the four columns of one
//! `hidden[1] × 4` linear layer, which is exactly the same function as four separate
//! `hidden[1] × 1` layers but one matrix product instead of four.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::rng;
use crate::HEADS;

/// The network's shape. Stored in every artifact so that loading can rebuild it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Architecture {
    pub input: usize,
    pub hidden: [usize; 2],
}

impl Architecture {
    /// The default trunk for `input` features: `input → 128 → 64`.
    pub fn new(input: usize) -> Self {
        Architecture {
            input,
            hidden: [128, 64],
        }
    }

    pub(crate) fn check(&self) -> Result<(), ModelError> {
        let ok = |n: usize| (1..=1 << 14).contains(&n);
        if ok(self.input) && ok(self.hidden[0]) && ok(self.hidden[1]) {
            Ok(())
        } else {
            Err(ModelError::InvalidConfig(format!(
                "layer widths must be between 1 and 16384, got {self:?}"
            )))
        }
    }

    /// Shapes of the parameters in storage order: `[in, out]` weights, `[out]` biases.
    pub(crate) fn param_shapes(&self) -> [Vec<usize>; 6] {
        let [h0, h1] = self.hidden;
        [
            vec![self.input, h0],
            vec![h0],
            vec![h0, h1],
            vec![h1],
            vec![h1, HEADS],
            vec![HEADS],
        ]
    }
}

/// The burn module. Weights are `[d_in, d_out]` (burn's row layout), so `y = x·W + b`.
#[derive(Module, Debug)]
pub struct Network {
    trunk0: Linear,
    trunk1: Linear,
    heads: Linear,
}

impl Network {
    /// Fresh weights drawn from the caller's seed: uniform in `±1/√fan_in` for weights and
    /// biases, PyTorch's default for linear layers.
    pub(crate) fn init(arch: &Architecture, seed: u64, device: &Device) -> Network {
        let mut rng = rng::derive(seed, 1, 0);
        let params: Vec<Vec<f32>> = arch
            .param_shapes()
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                // Biases take the fan-in of the weight before them.
                let fan_in = if i % 2 == 0 {
                    shape[0]
                } else {
                    arch.param_shapes()[i - 1][0]
                };
                let bound = 1.0 / (fan_in as f64).sqrt();
                let n: usize = shape.iter().product();
                (0..n)
                    .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            })
            .collect();
        Network::from_params(arch, &params, device)
    }

    /// Builds the module from plain parameter arrays in [`Architecture::param_shapes`] order. The
    /// caller has checked the lengths.
    pub(crate) fn from_params(
        arch: &Architecture,
        params: &[Vec<f32>],
        device: &Device,
    ) -> Network {
        let shapes = arch.param_shapes();
        let linear = |i: usize| Linear {
            weight: Param::from_tensor(Tensor::<2>::from_data(
                TensorData::new(params[i].clone(), [shapes[i][0], shapes[i][1]]),
                device,
            )),
            bias: Some(Param::from_tensor(Tensor::<1>::from_data(
                TensorData::new(params[i + 1].clone(), [shapes[i + 1][0]]),
                device,
            ))),
        };
        Network {
            trunk0: linear(0),
            trunk1: linear(2),
            heads: linear(4),
        }
    }

    /// The parameters as plain arrays, in [`Architecture::param_shapes`] order.
    pub(crate) fn params(&self) -> Vec<Vec<f32>> {
        let mut out = Vec::with_capacity(6);
        for l in [&self.trunk0, &self.trunk1, &self.heads] {
            out.push(to_vec(l.weight.val().into_data()));
            let b = l.bias.as_ref().map(|b| to_vec(b.val().into_data()));
            out.push(b.unwrap_or_default());
        }
        out
    }

    /// Logits, `[rows, HEADS]`. Probabilities are their sigmoid.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = relu(self.trunk0.forward(x));
        let h = relu(self.trunk1.forward(h));
        self.heads.forward(h)
    }
}

pub(crate) fn to_vec(data: TensorData) -> Vec<f32> {
    match data.as_slice::<f32>() {
        Ok(s) => s.to_vec(),
        // Not f32 (a backend configured for another float type): convert element by element.
        Err(_) => data
            .convert::<f32>()
            .as_slice::<f32>()
            .map(<[f32]>::to_vec)
            .unwrap_or_default(),
    }
}
