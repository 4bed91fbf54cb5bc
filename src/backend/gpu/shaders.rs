//! The WGSL sources in `shaders/`, with the one piece of preprocessing we allow: a line
//! `#include "shared/NAME.wgsl"` is replaced by that file. [`locate`] maps a line of the expanded
//! source back to its file and line, so a validation error names the real place.

use crate::error::{Error, Result};

/// Every shader file, by its path under `shaders/`.
pub const FILES: &[(&str, &str)] = &[
    (
        "shared/params.wgsl",
        include_str!("../../../shaders/shared/params.wgsl"),
    ),
    (
        "shared/record.wgsl",
        include_str!("../../../shaders/shared/record.wgsl"),
    ),
    (
        "shared/slot_table.wgsl",
        include_str!("../../../shaders/shared/slot_table.wgsl"),
    ),
    ("count_slots.wgsl", include_str!("../../../shaders/count_slots.wgsl")),
    ("scan.wgsl", include_str!("../../../shaders/scan.wgsl")),
    (
        "scatter_slots.wgsl",
        include_str!("../../../shaders/scatter_slots.wgsl"),
    ),
    ("reduce_runs.wgsl", include_str!("../../../shaders/reduce_runs.wgsl")),
];

/// The kernels (files that are compiled into pipelines).
pub const KERNELS: &[&str] = &[
    "count_slots.wgsl",
    "scan.wgsl",
    "scatter_slots.wgsl",
    "reduce_runs.wgsl",
];

fn file(name: &str) -> Result<&'static str> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| Error::Gpu(format!("unknown shader file '{name}'")))
}

/// The expanded source of `name` and, per expanded line, its `(file, 1-based line)`.
pub fn expand(name: &str) -> Result<(String, Vec<(&'static str, u32)>)> {
    let mut out = String::new();
    let mut map = vec![];
    expand_into(name, &mut out, &mut map, 0)?;
    Ok((out, map))
}

fn expand_into(name: &str, out: &mut String, map: &mut Vec<(&'static str, u32)>, depth: u32) -> Result<()> {
    if depth > 4 {
        return Err(Error::Gpu(format!("#include nesting too deep at '{name}'")));
    }
    let (fname, text) = FILES
        .iter()
        .find(|(n, _)| *n == name)
        .copied()
        .ok_or_else(|| Error::Gpu(format!("unknown shader file '{name}'")))?;
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.trim().strip_prefix("#include") {
            let inc = rest.trim().trim_matches('"');
            file(inc)?;
            expand_into(inc, out, map, depth + 1)?;
        } else {
            out.push_str(line);
            out.push('\n');
            map.push((fname, i as u32 + 1));
        }
    }
    Ok(())
}

/// The expanded source of a kernel file.
pub fn source(name: &str) -> Result<String> {
    Ok(expand(name)?.0)
}

/// The original `(file, line)` of 1-based `line` in the expansion of `name`.
pub fn locate(name: &str, line: u32) -> Option<(&'static str, u32)> {
    let (_, map) = expand(name).ok()?;
    map.get(line.checked_sub(1)? as usize).copied()
}

/// Parses and validates a kernel with naga; the error names the file and line.
pub fn validate(name: &str) -> Result<()> {
    use wgpu::naga;
    let src = source(name)?;
    let place = |loc: Option<naga::SourceLocation>| -> String {
        match loc.and_then(|l| locate(name, l.line_number).map(|(f, ln)| (f, ln, l.line_position))) {
            Some((f, ln, col)) => format!("shaders/{f}:{ln}:{col}"),
            None => format!("shaders/{name}"),
        }
    };
    let module = naga::front::wgsl::parse_str(&src).map_err(|e| {
        Error::Gpu(format!(
            "{}: {}\n{}",
            place(e.location(&src)),
            e.message(),
            e.emit_to_string(&src)
        ))
    })?;
    let mut v = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    );
    v.validate(&module).map_err(|e| {
        Error::Gpu(format!(
            "{}: {}\n{}",
            place(e.location(&src)),
            e,
            e.emit_to_string(&src)
        ))
    })?;
    Ok(())
}
