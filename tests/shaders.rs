//! Every WGSL kernel parses and validates with naga, so a broken shader fails `cargo test` with
//! its file and line; and the #include expansion maps lines back to the right file.

use fenestra::backend::gpu::shaders;

#[test]
fn every_kernel_validates() {
    for k in shaders::KERNELS {
        if let Err(e) = shaders::validate(k) {
            panic!("{e}");
        }
    }
}

#[test]
fn includes_map_back_to_their_file_and_line() {
    let (src, map) = shaders::expand("reduce_runs.wgsl").unwrap();
    let line = src.lines().position(|l| l.contains("fn df_add")).unwrap() as u32 + 1;
    let (file, ln) = shaders::locate("reduce_runs.wgsl", line).unwrap();
    assert_eq!(file, "shared/record.wgsl");
    let orig = include_str!("../shaders/shared/record.wgsl")
        .lines()
        .nth(ln as usize - 1)
        .unwrap();
    assert!(orig.contains("fn df_add"));
    assert_eq!(map.len(), src.lines().count());
}

#[test]
fn a_broken_kernel_names_its_file_and_line() {
    // The validator's error path: parse a deliberately broken copy and check the location.
    let src = shaders::source("scan.wgsl")
        .unwrap()
        .replace("total = total + x;", "total = total + y;");
    let err = wgpu::naga::front::wgsl::parse_str(&src).map(|_| ()).err();
    let msg = match err {
        Some(e) => e.emit_to_string_with_path(&src, "scan.wgsl"),
        None => {
            let m = wgpu::naga::front::wgsl::parse_str(&src).unwrap();
            let mut v =
                wgpu::naga::valid::Validator::new(wgpu::naga::valid::ValidationFlags::all(), Default::default());
            v.validate(&m)
                .err()
                .map(|e| e.emit_to_string_with_path(&src, "scan.wgsl"))
                .unwrap_or_default()
        }
    };
    assert!(msg.contains("scan.wgsl:"), "{msg}");
    assert!(msg.contains('y'), "{msg}");
}
