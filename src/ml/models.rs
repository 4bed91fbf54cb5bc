//! burn models (linear and MLP), devices, and the train/infer steps.
//!
//! burn 0.22 is backend-erased: a model lives on a [`Device`] chosen at run time — `wgpu` on the
//! GPU, `flex` (pure Rust) on the CPU — and `device.autodiff()` marks it for training. Weights
//! are initialised on the host from our own seeded generator, so the GPU and CPU start from the
//! same model.

use crate::backend::BackendChoice;
use crate::error::{Error, Result};
use crate::generator::Rng;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};
use std::sync::OnceLock;

/// A feed-forward network: `hidden` ReLU layers, then one linear output. No hidden layer is a
/// linear model.
#[derive(Module, Debug)]
pub struct Net {
    layers: Vec<Linear>,
}

impl Net {
    /// A network `d_in -> hidden... -> 1` with Xavier-uniform weights drawn from `seed`.
    pub fn new(d_in: usize, hidden: &[usize], seed: u64, device: &Device) -> Self {
        let mut rng = Rng::new(seed);
        let mut dims = vec![d_in];
        dims.extend_from_slice(hidden);
        dims.push(1);
        let layers = dims
            .windows(2)
            .map(|w| {
                let (i, o) = (w[0], w[1]);
                let k = (6.0 / (i + o) as f64).sqrt();
                let weight: Vec<f32> = (0..i * o).map(|_| ((rng.next_f64() * 2.0 - 1.0) * k) as f32).collect();
                Linear {
                    weight: Param::from_data(TensorData::new(weight, [i, o]), device),
                    bias: Some(Param::from_data(TensorData::new(vec![0.0f32; o], [o]), device)),
                }
            })
            .collect();
        Net { layers }
    }

    /// `x: [n, d_in] -> [n, 1]`.
    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// The loss a task trains with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Mean squared error on a standardised target.
    Mse,
    /// Binary cross-entropy on logits.
    Logistic,
}

/// Steps after which the learning rate has fallen to `lr / sqrt(2)`.
const DECAY_STEPS: f64 = 500.0;

static WGPU: OnceLock<std::result::Result<Device, String>> = OnceLock::new();

/// Whether a hardware (non-software) GPU adapter exists.
fn hardware_gpu() -> bool {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        flags: wgpu::InstanceFlags::empty(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .iter()
        .any(|a| !crate::backend::gpu::device::is_software(&a.get_info()))
}

fn wgpu_device() -> Result<Device> {
    WGPU.get_or_init(|| match Device::wgpu_options().init() {
        Ok(d) => Ok(d),
        // Something (burn's default device, e.g. restoring optimiser state) started the runtime
        // first: use it.
        Err(e) if e.to_string().contains("already initialized") => {
            Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
        }
        Err(e) => Err(e.to_string()),
    })
    .clone()
    .map_err(|e| Error::NoAdapter(format!("burn's wgpu runtime could not start: {e}")))
}

/// The device for a backend choice: `gpu` = wgpu (an error without an adapter), `cpu` and
/// `reference` = flex, `auto` = wgpu when a hardware GPU exists, flex otherwise. Returns the
/// device and a description.
pub fn device_for(choice: BackendChoice) -> Result<(Device, String)> {
    match choice {
        BackendChoice::Gpu => Ok((wgpu_device()?, "gpu (burn wgpu)".into())),
        BackendChoice::Cpu | BackendChoice::Reference => Ok((Device::flex(), "cpu (burn flex)".into())),
        BackendChoice::Auto => {
            if hardware_gpu()
                && let Ok(d) = wgpu_device()
            {
                return Ok((d, "gpu (burn wgpu)".into()));
            }
            Ok((Device::flex(), "cpu (burn flex)".into()))
        }
    }
}

/// A model with its optimiser: inference on the plain device, training on its autodiff twin.
pub struct Learner {
    net: Net,
    optim: ModuleOptimizer,
    device: Device,
    loss: Loss,
    lr: f64,
    /// Optimiser steps taken (the model version).
    pub steps: u64,
    d_in: usize,
}

impl Learner {
    /// A fresh model for inputs of width `d_in`.
    pub fn new(d_in: usize, hidden: &[usize], loss: Loss, lr: f64, seed: u64, device: Device) -> Self {
        let net = Net::new(d_in, hidden, seed, &device.clone().autodiff());
        Learner {
            net,
            optim: AdamConfig::new().init(),
            device,
            loss,
            lr,
            steps: 0,
            d_in,
        }
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// Model outputs for `n` rows of `x` (row-major): regression values, or probabilities for
    /// the logistic loss.
    pub fn predict(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        if n == 0 {
            return Ok(vec![]);
        }
        let net = self.net.valid();
        let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [n, self.d_in]), &self.device);
        let mut y = net.forward(xt);
        if self.loss == Loss::Logistic {
            y = sigmoid(y);
        }
        y.try_into_vec_as::<f32>()
            .map_err(|e| Error::Model(format!("reading predictions: {e:?}")))
    }

    /// One Adam step on a mini-batch of `n` rows; returns the loss.
    pub fn train(&mut self, x: &[f32], y: &[f32], n: usize) -> Result<f32> {
        if n == 0 {
            return Ok(0.0);
        }
        let ad = self.device.clone().autodiff();
        let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [n, self.d_in]), &ad);
        let yt = Tensor::<2>::from_data(TensorData::new(y.to_vec(), [n, 1]), &ad);
        let out = self.net.forward(xt);
        let loss = match self.loss {
            Loss::Mse => (out - yt).square().mean(),
            Loss::Logistic => ((yt.neg() + 1.0) * out.clone() - log_sigmoid(out)).mean(),
        };
        let value = loss
            .clone()
            .try_into_scalar::<f32>()
            .map_err(|e| Error::Model(format!("reading the loss: {e:?}")))?;
        let grads = GradientsParams::from_grads(loss.backward(), &self.net);
        let net = std::mem::replace(&mut self.net, Net { layers: vec![] });
        // Inverse-square-root decay after a warm start, so that the online solution settles
        // instead of hovering at the noise level of a constant step.
        let lr = self.lr / (1.0 + self.steps as f64 / DECAY_STEPS).sqrt();
        self.net = self.optim.step(lr, net, grads);
        self.steps += 1;
        Ok(value)
    }

    /// Saves the weights (`<path>`, burnpack) and the optimiser state (`<path>.adam`).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        self.net
            .clone()
            .save_file(path)
            .map_err(|e| Error::Model(format!("saving the model to '{}': {e}", path.display())))?;
        self.optim
            .save(adam_path(path))
            .map_err(|e| Error::Model(format!("saving the optimiser state of '{}': {e}", path.display())))
    }

    /// Loads weights and optimiser state saved by [`Learner::save`] into this (same-shaped)
    /// model. burn restores optimiser state on its default device (the `BURN_DEVICE`
    /// environment variable, else a GPU); without a GPU adapter set `BURN_DEVICE=flex` (the CLI
    /// does so itself when it finds no adapter).
    pub fn load(mut self, path: &std::path::Path) -> Result<Self> {
        let ad = self.device.clone().autodiff();
        let template = std::mem::replace(&mut self.net, Net { layers: vec![] });
        let _ = ad;
        self.net = template
            .try_load_file(path)
            .map_err(|e| Error::Model(format!("loading the model '{}': {e}", path.display())))?;
        let default_ok = std::env::var("BURN_DEVICE").is_ok() || any_wgpu_adapter();
        if !default_ok {
            return Err(Error::Model(
                "cannot restore the optimiser state: burn keeps it on its default device, which is wgpu, and no GPU adapter exists; set BURN_DEVICE=flex".into(),
            ));
        }
        let optim = std::mem::replace(&mut self.optim, AdamConfig::new().init());
        self.optim = optim
            .load(adam_path(path))
            .map_err(|e| Error::Model(format!("loading the optimiser state of '{}': {e}", path.display())))?;
        Ok(self)
    }
}

/// Whether wgpu finds any adapter (burn's default device needs one unless `BURN_DEVICE` says
/// otherwise).
pub fn any_wgpu_adapter() -> bool {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        flags: wgpu::InstanceFlags::empty(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    !pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY)).is_empty()
}

fn adam_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".adam");
    p.into()
}
