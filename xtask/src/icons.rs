//! The app icon, drawn here (no downloaded artwork): a teal disc with a white dot and two arcs,
//! sound reaching an ear. Deterministic, so `cargo xtask assets --check` can compare bytes.

/// The icon sizes Tauri's bundler and window icon use, with their file names: every size the
/// hicolor theme's launchers and software centres ask for, so none is scaled from another.
pub const ICONS: &[(&str, u32)] = &[
    ("16x16.png", 16),
    ("24x24.png", 24),
    ("32x32.png", 32),
    ("48x48.png", 48),
    ("64x64.png", 64),
    ("128x128.png", 128),
    ("icon.png", 256),
    ("512x512.png", 512),
];

/// PNG bytes of the icon at `size` × `size` pixels.
pub fn png_bytes(size: u32) -> Vec<u8> {
    let mut rgba = Vec::with_capacity((size * size * 4) as usize);
    // 4 × 4 samples per pixel for smooth edges.
    const GRID: u32 = 4;
    for y in 0..size {
        for x in 0..size {
            let (mut disc, mut mark) = (0.0, 0.0);
            for sy in 0..GRID {
                for sx in 0..GRID {
                    let u = (f64::from(x) + (f64::from(sx) + 0.5) / f64::from(GRID)) / f64::from(size) * 2.0 - 1.0;
                    let v = (f64::from(y) + (f64::from(sy) + 0.5) / f64::from(GRID)) / f64::from(size) * 2.0 - 1.0;
                    let (inside, white) = shape(u, v);
                    disc += f64::from(u8::from(inside));
                    mark += f64::from(u8::from(white));
                }
            }
            let samples = f64::from(GRID * GRID);
            let (disc, mark) = (disc / samples, mark / samples);
            let teal = [15.0, 139.0, 141.0];
            let pixel: Vec<u8> = teal.iter().map(|c| (c * (1.0 - mark) + 255.0 * mark).round() as u8).collect();
            rgba.extend_from_slice(&pixel);
            rgba.push((disc * 255.0).round() as u8);
        }
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, size, size);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("writing to memory");
        writer.write_image_data(&rgba).expect("writing to memory");
    }
    bytes
}

/// Whether (u, v) in [-1, 1]² is inside the disc, and whether it is white.
fn shape(u: f64, v: f64) -> (bool, bool) {
    let r = (u * u + v * v).sqrt();
    if r > 0.94 {
        return (false, false);
    }
    // The source: a dot left of centre; the sound: two arcs opening to the right.
    let (cx, cy) = (-0.38, 0.0);
    let (du, dv) = (u - cx, v - cy);
    let d = (du * du + dv * dv).sqrt();
    let dot = d < 0.14;
    let facing = du > 0.0 && dv.abs() < du * 1.1;
    let arc = |radius: f64| (d - radius).abs() < 0.065 && facing;
    (true, dot || arc(0.36) || arc(0.62))
}
