//! Adapter selection, pipelines, buffers and the per-batch dispatch of the GPU backend.

use super::record::{Record, RunOutputs, assemble};
use super::shaders;
use crate::backend::cpu::mirror;
use crate::backend::{AggBackend, BackendKind, Partials, SKIP_SLOT, SlotBatch, StageTimes, cpu};
use crate::backend::{BatchPolicy, Submitted};
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wgpu::util::DeviceExt;

/// Which adapters are acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterPreference {
    /// Only a hardware GPU (what `auto` uses).
    HardwareOnly,
    /// Any adapter, software ones (lavapipe/llvmpipe) included (what `gpu` uses).
    AnyIncludingSoftware,
}

/// Sorted positions per reduce thread.
const CHUNK: u32 = mirror::CHUNK as u32;
/// Events per count/scatter workgroup (`TILE` in shared/slot_table.wgsl).
const TILE: u32 = mirror::TILE as u32;
/// Elements per scan workgroup (256 threads x 4).
const SCAN_BLOCK: u32 = mirror::SCAN_BLOCK as u32;
/// Buffer sets: one batch computes on the device while the next is uploaded.
const DEPTH: usize = 2;
/// Upper bound on one batch, whatever the device allows.
const MAX_EVENTS: usize = 1 << 24;
/// Uniform parameter blocks (dynamic offsets are 256-byte aligned).
const PARAM_BLOCKS: usize = 32;
const PARAM_STRIDE: u64 = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_events: u32,
    n_sorted: u32,
    num_slots: u32,
    col: u32,
    len: u32,
    chunk: u32,
    stride: u32,
    ncols: u32,
    one: f32,
    pad: [u32; 3],
}

fn kind_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Cpu => "software adapter (CPU)",
        wgpu::DeviceType::Other => "other adapter",
    }
}

/// Whether an adapter runs on the CPU (lavapipe, llvmpipe, SwiftShader, WARP).
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    let name = info.name.to_ascii_lowercase();
    info.device_type == wgpu::DeviceType::Cpu
        || ["llvmpipe", "lavapipe", "swiftshader", "software", "warp"]
            .iter()
            .any(|s| name.contains(s))
}

/// One line describing an adapter: name, API, driver, hardware or software.
pub fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{} ({:?}, driver {}, {}{})",
        info.name,
        info.backend,
        if driver.is_empty() {
            "unknown".to_string()
        } else {
            driver
        },
        kind_name(info.device_type),
        if is_software(info) { ", software" } else { ", hardware" }
    )
}

fn rank(info: &wgpu::AdapterInfo) -> u32 {
    if is_software(info) {
        return 0;
    }
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        _ => 1,
    }
}

struct Pipelines {
    count: wgpu::ComputePipeline,
    scan_blocks: wgpu::ComputePipeline,
    add_offsets: wgpu::ComputePipeline,
    scatter: wgpu::ComputePipeline,
    reduce: wgpu::ComputePipeline,
    count_bgl: wgpu::BindGroupLayout,
    scan_bgl: wgpu::BindGroupLayout,
    scatter_bgl: wgpu::BindGroupLayout,
    reduce_bgl: wgpu::BindGroupLayout,
}

/// Device buffers, sized for a capacity and re-used across batches.
struct Buffers {
    cap_events: usize,
    ncols: usize,
    slots: wgpu::Buffer,
    values: wgpu::Buffer,
    counts: wgpu::Buffer,
    scan_sums: Vec<wgpu::Buffer>,
    cursor: wgpu::Buffer,
    perm: wgpu::Buffer,
    out_counts: wgpu::Buffer,
    out_recs: wgpu::Buffer,
    carry_slots: wgpu::Buffer,
    carry_counts: wgpu::Buffer,
    carry_recs: wgpu::Buffer,
    params: wgpu::Buffer,
    readback: wgpu::Buffer,
    readback_size: u64,
}

/// A submitted batch: where its results will be and how to read them.
struct InFlight {
    set: usize,
    submission: wgpu::SubmissionIndex,
    num_slots: usize,
    ncols: usize,
    /// Byte offset and length of each read-back section (counts, records, carry slots, carry
    /// counts, carry records).
    sections: [(u64, u64); 5],
    total: u64,
    mapped: std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

/// The GPU aggregation backend.
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pipes: Pipelines,
    /// One buffer set per batch that may be in flight.
    sets: Vec<Option<Buffers>>,
    /// Batches submitted and not yet completed, oldest first.
    in_flight: std::collections::VecDeque<InFlight>,
    next_set: usize,
    policy: Option<BatchPolicy>,
    errors: Arc<Mutex<Vec<String>>>,
    times: StageTimes,
    fallback: cpu::CpuBackend,
    /// Test hook: add this to the sum of slot 0's first column in the next result.
    corrupt: Option<f64>,
}

impl GpuBackend {
    /// Opens the best adapter allowed by `pref`: a discrete GPU first, then integrated, virtual,
    /// other, and (for [`AdapterPreference::AnyIncludingSoftware`]) software adapters last.
    pub fn new(pref: AdapterPreference) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY,
            flags: wgpu::InstanceFlags::empty(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
        let found: Vec<String> = adapters.iter().map(|a| describe_adapter(&a.get_info())).collect();
        let mut usable: Vec<wgpu::Adapter> = adapters
            .into_iter()
            .filter(|a| {
                a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
            })
            .filter(|a| pref == AdapterPreference::AnyIncludingSoftware || !is_software(&a.get_info()))
            .collect();
        usable.sort_by_key(|a| std::cmp::Reverse(rank(&a.get_info())));
        let Some(adapter) = usable.into_iter().next() else {
            let looked = match pref {
                AdapterPreference::HardwareOnly => "a hardware GPU adapter",
                AdapterPreference::AnyIncludingSoftware => "any GPU adapter with compute shaders",
            };
            let seen = if found.is_empty() {
                "none (is a Vulkan, Metal or DX12 driver installed? on Linux: mesa-vulkan-drivers)".to_string()
            } else {
                found.join("; ")
            };
            return Err(Error::NoAdapter(format!(
                "looked for {looked} through Vulkan, Metal and DX12; found: {seen}"
            )));
        };
        let info = adapter.get_info();
        let a = adapter.limits();
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: a.max_storage_buffer_binding_size,
            max_buffer_size: a.max_buffer_size,
            max_storage_buffers_per_shader_stage: a
                .max_storage_buffers_per_shader_stage
                .max(8)
                .min(a.max_storage_buffers_per_shader_stage),
            max_compute_workgroup_storage_size: a.max_compute_workgroup_storage_size,
            ..wgpu::Limits::downlevel_defaults()
        }
        .using_resolution(a.clone())
        .using_alignment(a.clone());
        Self::check_limits(&info, &a)?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("fenestra"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::NoAdapter(format!("cannot open {}: {e}", describe_adapter(&info))))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec![]));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let pipes = Self::pipelines(&device)?;
        let backend = GpuBackend {
            device,
            queue,
            info,
            limits,
            pipes,
            sets: (0..DEPTH).map(|_| None).collect(),
            in_flight: std::collections::VecDeque::new(),
            next_set: 0,
            policy: None,
            errors,
            times: StageTimes::default(),
            fallback: cpu::CpuBackend::new(0),
            corrupt: None,
        };
        backend.take_errors()?;
        Ok(backend)
    }

    fn check_limits(info: &wgpu::AdapterInfo, a: &wgpu::Limits) -> Result<()> {
        let need = |what: &str, have: u64, want: u64| -> Result<()> {
            if have < want {
                return Err(Error::DeviceLimit(format!(
                    "{} offers {what} = {have}, fenestra needs at least {want}",
                    info.name
                )));
            }
            Ok(())
        };
        need(
            "max_compute_workgroup_storage_size",
            a.max_compute_workgroup_storage_size as u64,
            16384,
        )?;
        need(
            "max_compute_invocations_per_workgroup",
            a.max_compute_invocations_per_workgroup as u64,
            256,
        )?;
        need(
            "max_compute_workgroup_size_x",
            a.max_compute_workgroup_size_x as u64,
            256,
        )?;
        need(
            "max_storage_buffers_per_shader_stage",
            a.max_storage_buffers_per_shader_stage as u64,
            8,
        )?;
        need(
            "max_storage_buffer_binding_size",
            a.max_storage_buffer_binding_size,
            1 << 22,
        )?;
        Ok(())
    }

    fn pipelines(device: &wgpu::Device) -> Result<Pipelines> {
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = |name: &str| -> Result<wgpu::ShaderModule> {
            Ok(device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(shaders::source(name)?.into()),
            }))
        };
        let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let uniform = |binding: u32| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
            },
            count: None,
        };
        let bgl = |label: &str, entries: &[wgpu::BindGroupLayoutEntry]| {
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(label),
                entries,
            })
        };
        let count_bgl = bgl("count_slots", &[storage(0, true), storage(1, false), uniform(2)]);
        let scan_bgl = bgl("scan", &[storage(0, false), storage(1, false), uniform(2)]);
        let scatter_bgl = bgl(
            "scatter_slots",
            &[
                storage(0, true),
                storage(1, true),
                storage(2, false),
                storage(3, false),
                uniform(4),
            ],
        );
        let reduce_bgl = bgl(
            "reduce_runs",
            &[
                storage(0, true),
                storage(1, true),
                storage(2, true),
                storage(3, false),
                storage(4, false),
                storage(5, false),
                storage(6, false),
                storage(7, false),
                uniform(8),
            ],
        );
        let pipe = |m: &wgpu::ShaderModule, entry: &str, layout: &wgpu::BindGroupLayout| {
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(layout)],
                immediate_size: 0,
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pl),
                module: m,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            })
        };
        let count_m = module("count_slots.wgsl")?;
        let scan_m = module("scan.wgsl")?;
        let scatter_m = module("scatter_slots.wgsl")?;
        let reduce_m = module("reduce_runs.wgsl")?;
        let p = Pipelines {
            count: pipe(&count_m, "count_slots", &count_bgl),
            scan_blocks: pipe(&scan_m, "scan_blocks", &scan_bgl),
            add_offsets: pipe(&scan_m, "add_offsets", &scan_bgl),
            scatter: pipe(&scatter_m, "scatter_slots", &scatter_bgl),
            reduce: pipe(&reduce_m, "reduce_runs", &reduce_bgl),
            count_bgl,
            scan_bgl,
            scatter_bgl,
            reduce_bgl,
        };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("creating the compute pipelines failed: {e}")));
        }
        Ok(p)
    }

    /// The adapter's information.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// True when the adapter is a software rasteriser (lavapipe, llvmpipe, ...).
    pub fn is_software(&self) -> bool {
        is_software(&self.info)
    }

    /// Test hook for negative controls: the next result has `delta` added to the sum of the
    /// first column of slot 0, as a corrupted device result would.
    pub fn corrupt_next_result(&mut self, delta: f64) {
        self.corrupt = Some(delta);
    }

    fn take_errors(&self) -> Result<()> {
        let mut v = self
            .errors
            .lock()
            .map_err(|_| Error::Gpu("error log poisoned".into()))?;
        if v.is_empty() {
            return Ok(());
        }
        let msg = v.join("; ");
        v.clear();
        Err(Error::Gpu(msg))
    }

    fn max_events(&self, ncols: usize) -> usize {
        let ncols = ncols.max(1) as u64;
        let binding = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        let by_values = binding / (8 * ncols);
        let by_records = binding / (std::mem::size_of::<Record>() as u64 * ncols);
        (by_values.min(by_records) as usize).min(MAX_EVENTS).max(TILE as usize)
    }

    fn ensure_buffers(&mut self, set: usize, n: usize, ncols: usize) -> Result<()> {
        if let Some(b) = &self.sets[set]
            && b.cap_events >= n
            && b.ncols == ncols
        {
            return Ok(());
        }
        let cap = n.next_power_of_two().max(1 << 14).min(self.max_events(ncols));
        if cap < n {
            return Err(Error::DeviceLimit(format!(
                "a batch of {n} events exceeds what {} can hold ({cap})",
                self.info.name
            )));
        }
        let d = &self.device;
        let buf = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            d.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(16).next_multiple_of(16),
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        let st = U::STORAGE | U::COPY_DST | U::COPY_SRC;
        let rec = std::mem::size_of::<Record>() as u64;
        let threads = (cap as u64).div_ceil(CHUNK as u64);
        let mut scan_sums = vec![];
        let mut len = cap as u64;
        while len > SCAN_BLOCK as u64 {
            len = len.div_ceil(SCAN_BLOCK as u64);
            scan_sums.push(buf("scan_sums", len * 4, st));
        }
        scan_sums.push(buf("scan_total", 16, st));
        let out_counts_size = cap as u64 * 4;
        let out_recs_size = cap as u64 * ncols as u64 * rec;
        let carry_slots_size = 2 * threads * 4;
        let carry_recs_size = 2 * threads * ncols as u64 * rec;
        let readback_size = out_counts_size + out_recs_size + 2 * carry_slots_size + carry_recs_size;
        self.sets[set] = Some(Buffers {
            cap_events: cap,
            ncols,
            slots: buf("slots", cap as u64 * 4, st),
            values: buf("values", cap as u64 * 8 * ncols as u64, st),
            counts: buf("counts", cap as u64 * 4, st),
            scan_sums,
            cursor: buf("cursor", cap as u64 * 4, st),
            perm: buf("perm", cap as u64 * 4, st),
            out_counts: buf("out_counts", out_counts_size, st),
            out_recs: buf("out_recs", out_recs_size, st),
            carry_slots: buf("carry_slots", carry_slots_size, st),
            carry_counts: buf("carry_counts", carry_slots_size, st),
            carry_recs: buf("carry_recs", carry_recs_size, st),
            params: d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &vec![0u8; PARAM_BLOCKS * PARAM_STRIDE as usize],
                usage: U::UNIFORM | U::COPY_DST,
            }),
            readback: buf("readback", readback_size, U::MAP_READ | U::COPY_DST),
            readback_size,
        });
        self.take_errors()
    }

    /// Uploads one batch into the next free buffer set, records every kernel and the copy into
    /// the read-back buffer in one command buffer, submits it and asks for the mapping; returns
    /// without waiting for the device.
    fn start(&mut self, batch: &SlotBatch<'_>, ncols: usize) -> Result<()> {
        if self.in_flight.len() >= DEPTH {
            return Err(Error::config(format!(
                "more than {DEPTH} batches submitted to the GPU backend without complete()"
            )));
        }
        let set = self.next_set;
        let n = batch.slots.len();
        let s = batch.num_slots;
        let n_sorted = batch.slots.iter().filter(|&&x| x != SKIP_SLOT).count();
        self.ensure_buffers(set, n.max(s), ncols)?;
        let Some(b) = self.sets[set].as_ref() else {
            return Err(Error::Gpu("buffers missing".into()));
        };
        let t0 = Instant::now();
        let q = &self.queue;
        q.write_buffer(&b.slots, 0, bytemuck::cast_slice(batch.slots));
        for (c, col) in batch.values.iter().take(ncols).enumerate() {
            q.write_buffer(
                &b.values,
                (c * b.cap_events * 8) as u64,
                bytemuck::cast_slice(col.as_slice()),
            );
        }
        // Parameter blocks: 0 = count/scatter, 1..=ncols = reduce per column, then scan levels.
        let threads = (n_sorted as u32).div_ceil(CHUNK);
        let base = Params {
            n_events: n as u32,
            n_sorted: n_sorted as u32,
            num_slots: s as u32,
            col: 0,
            len: s as u32,
            chunk: CHUNK,
            stride: b.cap_events as u32,
            ncols: ncols as u32,
            one: 1.0,
            pad: [0; 3],
        };
        let mut blocks = vec![0u8; PARAM_BLOCKS * PARAM_STRIDE as usize];
        let mut put = |i: usize, p: Params| {
            let off = i * PARAM_STRIDE as usize;
            blocks[off..off + std::mem::size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&p));
        };
        // scan levels: level 0 scans counts (len s), level k scans scan_sums[k-1]
        let mut levels: Vec<u32> = vec![s as u32];
        while *levels.last().unwrap_or(&0) > SCAN_BLOCK {
            let l = levels.last().copied().unwrap_or(0).div_ceil(SCAN_BLOCK);
            levels.push(l);
        }
        let scan_base = 1 + ncols;
        if scan_base + levels.len() > PARAM_BLOCKS {
            return Err(Error::DeviceLimit(format!(
                "{ncols} value columns are more than the GPU backend handles in one pass"
            )));
        }
        put(0, base);
        for c in 0..ncols {
            put(1 + c, Params { col: c as u32, ..base });
        }
        for (k, len) in levels.iter().enumerate() {
            put(scan_base + k, Params { len: *len, ..base });
        }
        q.write_buffer(&b.params, 0, &blocks);

        let d = &self.device;
        let p = &self.pipes;
        fn ent(i: u32, buf: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
            wgpu::BindGroupEntry {
                binding: i,
                resource: buf.as_entire_binding(),
            }
        }
        let params_entry = |i: u32| wgpu::BindGroupEntry {
            binding: i,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &b.params,
                offset: 0,
                size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
            }),
        };
        let bg = |layout: &wgpu::BindGroupLayout, entries: &[wgpu::BindGroupEntry]| {
            d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout,
                entries,
            })
        };
        let count_bg = bg(&p.count_bgl, &[ent(0, &b.slots), ent(1, &b.counts), params_entry(2)]);
        let mut scan_bgs = vec![];
        for k in 0..levels.len() {
            let data = if k == 0 { &b.counts } else { &b.scan_sums[k - 1] };
            scan_bgs.push(bg(
                &p.scan_bgl,
                &[ent(0, data), ent(1, &b.scan_sums[k]), params_entry(2)],
            ));
        }
        let scatter_bg = bg(
            &p.scatter_bgl,
            &[
                ent(0, &b.slots),
                ent(1, &b.counts),
                ent(2, &b.cursor),
                ent(3, &b.perm),
                params_entry(4),
            ],
        );
        let reduce_bg = bg(
            &p.reduce_bgl,
            &[
                ent(0, &b.perm),
                ent(1, &b.slots),
                ent(2, &b.values),
                ent(3, &b.out_counts),
                ent(4, &b.out_recs),
                ent(5, &b.carry_slots),
                ent(6, &b.carry_counts),
                ent(7, &b.carry_recs),
                params_entry(8),
            ],
        );
        let mut enc = d.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("fenestra batch"),
        });
        enc.clear_buffer(&b.counts, 0, Some((s.max(1) as u64 * 4).next_multiple_of(4)));
        enc.clear_buffer(&b.cursor, 0, Some((s.max(1) as u64 * 4).next_multiple_of(4)));
        let off = |i: usize| (i as u64 * PARAM_STRIDE) as u32;
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("aggregate"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&p.count);
            pass.set_bind_group(0, &count_bg, &[off(0)]);
            pass.dispatch_workgroups((n as u32).div_ceil(TILE).max(1), 1, 1);
            pass.set_pipeline(&p.scan_blocks);
            for (k, len) in levels.iter().enumerate() {
                pass.set_bind_group(0, &scan_bgs[k], &[off(scan_base + k)]);
                pass.dispatch_workgroups(len.div_ceil(SCAN_BLOCK).max(1), 1, 1);
            }
            pass.set_pipeline(&p.add_offsets);
            for k in (0..levels.len().saturating_sub(1)).rev() {
                pass.set_bind_group(0, &scan_bgs[k], &[off(scan_base + k)]);
                pass.dispatch_workgroups(levels[k].div_ceil(SCAN_BLOCK).max(1), 1, 1);
            }
            pass.set_pipeline(&p.scatter);
            pass.set_bind_group(0, &scatter_bg, &[off(0)]);
            pass.dispatch_workgroups((n as u32).div_ceil(TILE).max(1), 1, 1);
            if threads > 0 {
                pass.set_pipeline(&p.reduce);
                for c in 0..ncols {
                    pass.set_bind_group(0, &reduce_bg, &[off(1 + c)]);
                    pass.dispatch_workgroups(threads.div_ceil(256), 1, 1);
                }
            }
        }
        // Read back only what this batch wrote.
        let rec = std::mem::size_of::<Record>() as u64;
        let sources = [
            &b.out_counts,
            &b.out_recs,
            &b.carry_slots,
            &b.carry_counts,
            &b.carry_recs,
        ];
        let lens = [
            s as u64 * 4,
            s as u64 * ncols as u64 * rec,
            2 * threads as u64 * 4,
            2 * threads as u64 * 4,
            2 * threads as u64 * ncols as u64 * rec,
        ];
        let mut sections = [(0u64, 0u64); 5];
        let mut at = 0u64;
        for (k, (src, len)) in sources.iter().zip(lens).enumerate() {
            sections[k] = (at, len);
            if len > 0 {
                enc.copy_buffer_to_buffer(src, 0, &b.readback, at, len);
            }
            at += len;
        }
        debug_assert!(at <= b.readback_size);
        let total = at.max(4);
        let submission = self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        b.readback.slice(0..total).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        if !self.in_flight.is_empty() {
            self.times.overlapped += 1;
        }
        self.in_flight.push_back(InFlight {
            set,
            submission,
            num_slots: s,
            ncols,
            sections,
            total,
            mapped: rx,
        });
        self.next_set = (set + 1) % DEPTH;
        self.times.upload_s += t0.elapsed().as_secs_f64();
        Ok(())
    }

    /// Waits for the oldest batch in flight and turns its read-back into partials; returns
    /// whether it saw a value beyond the f32 range.
    fn finish_oldest(&mut self, out: &mut Partials) -> Result<bool> {
        let Some(job) = self.in_flight.pop_front() else {
            return Err(Error::config("complete() called with no batch in flight on the GPU"));
        };
        let t1 = Instant::now();
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(job.submission),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        job.mapped
            .recv()
            .map_err(|_| Error::Gpu("the read-back callback was dropped".into()))?
            .map_err(|e| Error::Gpu(format!("mapping the read-back buffer: {e}")))?;
        self.times.kernel_s += t1.elapsed().as_secs_f64();
        let Some(b) = self.sets[job.set].as_ref() else {
            return Err(Error::Gpu("buffers missing".into()));
        };
        let t2 = Instant::now();
        let slice = b.readback.slice(0..job.total);
        // The buffer is mapped from here on: every path below unmaps it, so that the set can be
        // used again even after an error.
        let overflow = self.take_errors().and_then(|_| {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("reading back: {e}")))?;
            let bytes: &[u8] = &view;
            let sec = |k: usize| {
                let (at, len) = job.sections[k];
                &bytes[at as usize..(at + len) as usize]
            };
            let runs = RunOutputs {
                out_counts: bytemuck::cast_slice(sec(0)),
                out_recs: bytemuck::cast_slice(sec(1)),
                carry_slots: bytemuck::cast_slice(sec(2)),
                carry_counts: bytemuck::cast_slice(sec(3)),
                carry_recs: bytemuck::cast_slice(sec(4)),
            };
            assemble(&runs, job.num_slots, job.ncols, out)
        });
        b.readback.unmap();
        self.times.readback_s += t2.elapsed().as_secs_f64();
        self.times.batches += 1;
        overflow
    }

    /// The batch's result after the device's: recomputed in f64 on overflow, and the test hook.
    fn finalize(&mut self, batch: &SlotBatch<'_>, ncols: usize, out: &mut Partials, overflow: bool) -> Result<()> {
        if overflow {
            // A finite value beyond the f32 range: recompute this batch in f64.
            self.fallback.reduce(batch, ncols, out)?;
        }
        if let Some(delta) = self.corrupt.take()
            && let Some(c) = out.cols.first_mut()
        {
            c.sum += delta;
        }
        Ok(())
    }

    fn check_size(&self, batch: &SlotBatch<'_>, ncols: usize) -> Result<()> {
        let max = self.max_events(ncols);
        if batch.slots.len() > max || batch.num_slots > max {
            return Err(Error::DeviceLimit(format!(
                "a batch of {} events is more than {} takes at once ({max})",
                batch.slots.len(),
                self.info.name
            )));
        }
        if batch.values.len() < ncols {
            return Err(Error::RaggedBatch(format!(
                "{} value columns given, {ncols} expected",
                batch.values.len()
            )));
        }
        Ok(())
    }

    /// Measures the fixed cost of a batch (a one-event batch, median of three) and the cost per
    /// event (a batch of 2^16 events over 4,096 slots, best of two), and picks the micro-batch
    /// size by [`BatchPolicy::choose`]. Runs once; later calls return the first answer.
    pub fn calibrate(&mut self, ncols: usize) -> Result<BatchPolicy> {
        if let Some(p) = self.policy {
            return Ok(p);
        }
        if !self.in_flight.is_empty() {
            return Err(Error::config("calibrate() while batches are in flight"));
        }
        let ncols = ncols.max(1);
        let saved = self.times;
        let time = |n: usize, slots: usize, out: &mut Partials, this: &mut Self| -> Result<f64> {
            let ids: Vec<u32> = (0..n).map(|i| ((i * 2_654_435_761) % slots) as u32).collect();
            let vals: Vec<Vec<f64>> = (0..ncols).map(|c| (0..n).map(|i| (i + c) as f64).collect()).collect();
            let batch = SlotBatch {
                slots: &ids,
                values: &vals,
                num_slots: slots,
                want_m2: true,
            };
            let t = Instant::now();
            this.start(&batch, ncols)?;
            this.finish_oldest(out)?;
            Ok(t.elapsed().as_secs_f64())
        };
        let mut out = Partials::default();
        let big = 1usize << 16;
        let measured = (|| -> Result<(f64, f64)> {
            // warm-up: both buffer sets at the large size, pipelines' first use
            time(big, 4096, &mut out, self)?;
            time(big, 4096, &mut out, self)?;
            let mut fixed = [0.0; 3];
            for f in &mut fixed {
                *f = time(1, 1, &mut out, self)?;
            }
            fixed.sort_by(f64::total_cmp);
            let large = time(big, 4096, &mut out, self)?.min(time(big, 4096, &mut out, self)?);
            Ok((fixed[1], large))
        })();
        self.times = saved;
        self.next_set = 0;
        let (fixed_s, large) = measured?;
        let per_event_s = ((large - fixed_s) / big as f64).max(1e-12);
        let policy = BatchPolicy::choose(fixed_s, per_event_s, 1 << 16, self.max_events(ncols));
        self.policy = Some(policy);
        Ok(policy)
    }
}

impl AggBackend for GpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }

    fn describe(&self) -> String {
        describe_adapter(&self.info)
    }

    fn reduce(&mut self, batch: &SlotBatch<'_>, ncols: usize, out: &mut Partials) -> Result<()> {
        if !self.in_flight.is_empty() {
            return Err(Error::config(
                "reduce() on the GPU backend while submitted batches are not completed",
            ));
        }
        // One batch at a time needs one buffer set.
        self.next_set = 0;
        if self.submit(batch, ncols, out)? == Submitted::InFlight {
            self.complete(batch, ncols, out)?;
        }
        Ok(())
    }

    fn submit(&mut self, batch: &SlotBatch<'_>, ncols: usize, out: &mut Partials) -> Result<Submitted> {
        if batch.slots.is_empty() || batch.num_slots == 0 {
            out.reset(batch.num_slots, ncols);
            return Ok(Submitted::Ready);
        }
        if ncols == 0 {
            // Counts only: the kernels write counts in their per-column pass, and there is no
            // column; counting slots is a trivial pass on the host.
            self.fallback.reduce(batch, 0, out)?;
            return Ok(Submitted::Ready);
        }
        self.check_size(batch, ncols)?;
        self.start(batch, ncols)?;
        Ok(Submitted::InFlight)
    }

    fn complete(&mut self, batch: &SlotBatch<'_>, ncols: usize, out: &mut Partials) -> Result<()> {
        let overflow = self.finish_oldest(out)?;
        self.finalize(batch, ncols, out, overflow)
    }

    fn max_in_flight(&self) -> usize {
        DEPTH
    }

    fn stage_times(&self) -> StageTimes {
        self.times
    }

    fn max_batch_events(&self, ncols: usize) -> usize {
        self.max_events(ncols)
    }

    fn preferred_batch_events(&mut self, ncols: usize) -> Result<usize> {
        Ok(self.calibrate(ncols)?.batch_events)
    }

    fn batch_policy(&self) -> Option<BatchPolicy> {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::Params;
    use wgpu::naga;

    /// `Params` is written by the host and read by every shader through
    /// `shaders/shared/params.wgsl`: the two layouts must agree member by member.
    #[test]
    fn params_match_the_wgsl_block() {
        let src = super::shaders::source("shared/params.wgsl").expect("params.wgsl");
        let module = naga::front::wgsl::parse_str(&src).expect("parse");
        let (_, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Params"))
            .expect("struct Params");
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("Params is not a struct");
        };
        assert_eq!(*span as usize, std::mem::size_of::<Params>());
        let p = Params::default();
        let base = &p as *const Params as usize;
        let host = [
            ("n_events", &p.n_events as *const u32 as usize),
            ("n_sorted", &p.n_sorted as *const u32 as usize),
            ("num_slots", &p.num_slots as *const u32 as usize),
            ("col", &p.col as *const u32 as usize),
            ("len", &p.len as *const u32 as usize),
            ("chunk", &p.chunk as *const u32 as usize),
            ("stride", &p.stride as *const u32 as usize),
            ("ncols", &p.ncols as *const u32 as usize),
            ("one", &p.one as *const f32 as usize),
        ];
        for (name, at) in host {
            let m = members
                .iter()
                .find(|m| m.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{name} missing in params.wgsl"));
            assert_eq!(m.offset as usize, at - base, "offset of {name}");
        }
    }
}
