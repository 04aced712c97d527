//! Pictures in I420 (planar 4:2:0, 8 bits), the one format every video path here speaks: cameras
//! are converted to it, VP8 takes and gives it, Y4M files hold it, the UI draws it.
//!
//! Layout: the Y plane (`width × height`), then U, then V (each `⌈width/2⌉ × ⌈height/2⌉`), rows
//! tightly packed, in one buffer, so a frame goes to a file or over IPC as one slice.

use crate::VideoError;

/// One picture.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420Frame({}x{})", self.width, self.height)
    }
}

/// Bytes of an I420 picture of this size.
pub fn i420_len(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
}

impl I420Frame {
    /// A black picture.
    pub fn black(width: u32, height: u32) -> I420Frame {
        let luma = width as usize * height as usize;
        let mut data = vec![128u8; i420_len(width, height)];
        data[..luma].fill(16);
        I420Frame { width, height, data }
    }

    /// A picture from its planes laid out as described in the module docs.
    pub fn from_bytes(width: u32, height: u32, data: Vec<u8>) -> Result<I420Frame, VideoError> {
        if width == 0 || height == 0 {
            return Err(VideoError::BadSize { width, height });
        }
        if data.len() != i420_len(width, height) {
            return Err(VideoError::BadSize { width, height });
        }
        Ok(I420Frame { width, height, data })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Width of the U and V planes.
    pub fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }

    /// Height of the U and V planes.
    pub fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    /// All three planes, as one slice.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The planes, Y, U and V.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let luma = self.width as usize * self.height as usize;
        let chroma = self.chroma_width() as usize * self.chroma_height() as usize;
        let (y, rest) = self.data.split_at(luma);
        let (u, v) = rest.split_at(chroma);
        (y, u, v)
    }

    /// The planes, Y, U and V, to write into.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = self.width as usize * self.height as usize;
        let chroma = self.chroma_width() as usize * self.chroma_height() as usize;
        let (y, rest) = self.data.split_at_mut(luma);
        let (u, v) = rest.split_at_mut(chroma);
        (y, u, v)
    }

    /// This picture at `width` x `height`: itself, borrowed, when it has that size already (no
    /// copy: a 720p copy is a fresh 1.4 MB mapping, faulted in page by page, 30 times a second),
    /// else [`I420Frame::scaled`].
    pub fn at_size(&self, width: u32, height: u32) -> std::borrow::Cow<'_, I420Frame> {
        if (width, height) == (self.width, self.height) {
            std::borrow::Cow::Borrowed(self)
        } else {
            std::borrow::Cow::Owned(self.scaled(width, height))
        }
    }

    /// The same picture at another size: the whole picture, stretched if the shapes differ (a
    /// recording keeps its size and never crops), bilinear per plane.
    pub fn scaled(&self, width: u32, height: u32) -> I420Frame {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let mut out = I420Frame::black(width.max(1), height.max(1));
        let (cw, ch) = (out.chroma_width(), out.chroma_height());
        let (sy, su, sv) = self.planes();
        let (scw, sch) = (self.chroma_width(), self.chroma_height());
        let (dy, du, dv) = out.planes_mut();
        scale_plane(sy, self.width, self.height, dy, width.max(1), height.max(1));
        scale_plane(su, scw, sch, du, cw, ch);
        scale_plane(sv, scw, sch, dv, cw, ch);
        out
    }
}

impl I420Frame {
    /// The picture as 32-bit pixels, B, G, R, then 255, rows tightly packed (what Cairo's RGB24
    /// and ARGB32 surfaces hold on a little-endian machine), for drawing outside a web page.
    /// BT.601 at limited range, as VP8 and the cameras' conversion use; `mirror` flips it left
    /// to right (our own camera, as a mirror shows it). SIMD through `yuv`.
    pub fn to_bgra(&self, mirror: bool) -> Vec<u8> {
        let (width, height) = (self.width as usize, self.height as usize);
        let mut bgra = vec![0u8; width * height * 4];
        let (y_plane, u_plane, v_plane) = self.planes();
        let planes = yuv::YuvPlanarImage {
            y_plane,
            y_stride: self.width,
            u_plane,
            u_stride: self.chroma_width(),
            v_plane,
            v_stride: self.chroma_width(),
            width: self.width,
            height: self.height,
        };
        // The planes' lengths follow from the size (checked where a frame is made), so `yuv`
        // has nothing to refuse; a refusal would leave the picture black, not panic.
        let _ = yuv::yuv420_to_bgra(&planes, &mut bgra, self.width * 4, yuv::YuvRange::Limited, yuv::YuvStandardMatrix::Bt601);
        if mirror {
            for row in bgra.chunks_exact_mut(width * 4) {
                mirror_row(row);
            }
        }
        bgra
    }
}

/// Reverses a row of 4-byte pixels in place.
fn mirror_row(row: &mut [u8]) {
    let (pixels, _) = row.as_chunks_mut::<4>();
    pixels.reverse();
}

/// Bilinear resampling of one plane; source pixel centres are mapped onto destination pixel
/// centres (16.16 fixed point) so the picture neither shifts nor loses its edges. Done in two
/// passes, each row's two source rows blended first across the whole width (a loop the compiler
/// vectorises), then the columns picked from the blend, with weights in 1/256: per pixel, one
/// formula on 64-bit values cost a 720p sender coding for a smaller view about 3 % of a core
/// (perf, `hark-appbench --call`).
fn scale_plane(src: &[u8], sw: u32, sh: u32, dst: &mut [u8], dw: u32, dh: u32) {
    let (sw, sh, dw, dh) = (sw as i64, sh as i64, dw as i64, dh as i64);
    // Source coordinate of a destination index, 16.16, clamped into the picture.
    let map = |d: i64, dn: i64, sn: i64| -> i64 { (((2 * d + 1) * sn * 65_536) / (2 * dn) - 32_768).clamp(0, (sn - 1) * 65_536) };
    let columns: Vec<(usize, usize, u32)> = (0..dw)
        .map(|x| {
            let sx = map(x, dw, sw);
            let x0 = sx >> 16;
            (x0 as usize, (x0 + 1).min(sw - 1) as usize, ((sx & 0xffff) >> 8) as u32)
        })
        .collect();
    // Two source rows blended, in 1/256: at most 255 * 256, which a u16 holds.
    let mut blended = vec![0u16; sw as usize];
    for y in 0..dh {
        let sy = map(y, dh, sh);
        let y0 = sy >> 16;
        let y1 = (y0 + 1).min(sh - 1);
        let below = ((sy & 0xffff) >> 8) as u16;
        let (row0, row1) = (&src[(y0 * sw) as usize..][..sw as usize], &src[(y1 * sw) as usize..][..sw as usize]);
        for ((blend, &top), &bottom) in blended.iter_mut().zip(row0).zip(row1) {
            *blend = u16::from(top) * (256 - below) + u16::from(bottom) * below;
        }
        let out = &mut dst[(y * dw) as usize..][..dw as usize];
        for (pixel, &(x0, x1, right)) in out.iter_mut().zip(&columns) {
            let value = u32::from(blended[x0]) * (256 - right) + u32::from(blended[x1]) * right;
            *pixel = ((value + (1 << 15)) >> 16) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_planes() {
        assert_eq!(i420_len(640, 360), 640 * 360 * 3 / 2);
        assert_eq!(i420_len(5, 3), 15 + 2 * 3 * 2);
        let frame = I420Frame::black(5, 3);
        let (y, u, v) = frame.planes();
        assert_eq!((y.len(), u.len(), v.len()), (15, 6, 6));
        assert!(I420Frame::from_bytes(4, 4, vec![0; 23]).is_err());
        assert!(I420Frame::from_bytes(0, 4, Vec::new()).is_err());
        assert!(I420Frame::from_bytes(4, 4, vec![0; 24]).is_ok());
    }

    /// A picture whose left half is one colour and right half another, given as Y, U, V.
    fn halves(width: u32, height: u32, left: [u8; 3], right: [u8; 3]) -> I420Frame {
        let mut frame = I420Frame::black(width, height);
        let (cw, w) = (frame.chroma_width() as usize, width as usize);
        let (y, u, v) = frame.planes_mut();
        for (i, p) in y.iter_mut().enumerate() {
            *p = if i % w < w / 2 { left[0] } else { right[0] };
        }
        for (plane, k) in [(u, 1), (v, 2)] {
            for (i, p) in plane.iter_mut().enumerate() {
                *p = if i % cw < cw / 2 { left[k] } else { right[k] };
            }
        }
        frame
    }

    #[test]
    fn pixels_for_drawing_are_bt601_limited_range_and_mirror_on_request() {
        // Limited-range BT.601: Y 16 is black, 235 white; (81, 90, 240) is red, (41, 240, 110) blue.
        let (white, red, blue) = ([235, 128, 128], [81, 90, 240], [41, 240, 110]);
        let close = |got: &[u8], want: [u8; 4]| got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 3);
        for (width, height) in [(16, 8), (18, 6), (320, 180)] {
            let frame = halves(width, height, red, blue);
            let bgra = frame.to_bgra(false);
            assert_eq!(bgra.len(), (width * height * 4) as usize);
            let row = (width * 4) as usize;
            let last_row = &bgra[bgra.len() - row..];
            assert!(close(&last_row[..4], [0, 0, 255, 255]), "left is red at {width}x{height}: {:?}", &last_row[..4]);
            assert!(close(&last_row[row - 4..], [255, 0, 0, 255]), "right is blue at {width}x{height}: {:?}", &last_row[row - 4..]);
            let mirrored = frame.to_bgra(true);
            for (plain, flipped) in bgra.chunks_exact(row).zip(mirrored.chunks_exact(row)) {
                let reversed: Vec<[u8; 4]> = plain.chunks_exact(4).rev().map(|p| [p[0], p[1], p[2], p[3]]).collect();
                let flipped: Vec<[u8; 4]> = flipped.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect();
                assert_eq!(reversed, flipped);
            }
        }
        let white = I420Frame::from_bytes(2, 2, vec![white[0], white[0], white[0], white[0], 128, 128]).unwrap().to_bgra(false);
        assert!(white.chunks_exact(4).all(|p| close(p, [255, 255, 255, 255])), "{white:?}");
        let black = I420Frame::black(4, 2).to_bgra(false);
        assert!(black.chunks_exact(4).all(|p| close(p, [0, 0, 0, 255])), "{black:?}");
    }

    /// Bilinear resampling as first written: one formula per pixel, 16.16 weights.
    fn scale_plane_per_pixel(src: &[u8], sw: u32, sh: u32, dw: u32, dh: u32) -> Vec<u8> {
        let (sw, sh, dw, dh) = (sw as i64, sh as i64, dw as i64, dh as i64);
        let map = |d: i64, dn: i64, sn: i64| -> i64 { (((2 * d + 1) * sn * 65_536) / (2 * dn) - 32_768).clamp(0, (sn - 1) * 65_536) };
        let mut out = Vec::new();
        for y in 0..dh {
            let sy = map(y, dh, sh);
            let (y0, fy) = (sy >> 16, sy & 0xffff);
            let y1 = (y0 + 1).min(sh - 1);
            for x in 0..dw {
                let sx = map(x, dw, sw);
                let (x0, fx) = (sx >> 16, sx & 0xffff);
                let x1 = (x0 + 1).min(sw - 1);
                let at = |yy: i64, xx: i64| i64::from(src[(yy * sw + xx) as usize]);
                let top = at(y0, x0) * (65_536 - fx) + at(y0, x1) * fx;
                let bottom = at(y1, x0) * (65_536 - fx) + at(y1, x1) * fx;
                out.push(((top * (65_536 - fy) + bottom * fy + (1 << 31)) >> 32).clamp(0, 255) as u8);
            }
        }
        out
    }

    #[test]
    fn the_two_pass_scaler_is_within_one_level_of_the_per_pixel_formula() {
        let source = crate::pattern::draw(1280, 720, 77);
        let (y, _, _) = source.planes();
        for (dw, dh) in [(718, 402), (640, 360), (160, 90), (1280, 720), (1920, 1080), (321, 181)] {
            let mut two_pass = vec![0u8; (dw * dh) as usize];
            scale_plane(y, 1280, 720, &mut two_pass, dw, dh);
            let reference = scale_plane_per_pixel(y, 1280, 720, dw, dh);
            let worst = two_pass.iter().zip(&reference).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert!(worst <= 1, "{dw}x{dh}: off by {worst}");
        }
    }

    #[test]
    fn scaling_keeps_flat_areas_and_edges_where_they_were() {
        // Left half dark, right half light, at 64x32; halved and doubled.
        let mut frame = I420Frame::black(64, 32);
        let (y, u, _) = frame.planes_mut();
        for row in y.chunks_mut(64) {
            row[32..].fill(200);
        }
        u.fill(90);
        for (w, h) in [(32, 16), (128, 64), (40, 30)] {
            let scaled = frame.scaled(w, h);
            let (y, u, v) = scaled.planes();
            assert_eq!((scaled.width(), scaled.height()), (w, h));
            let row = &y[(h as usize / 2) * w as usize..][..w as usize];
            assert_eq!(row[0], 16, "{w}x{h}");
            assert_eq!(row[w as usize - 1], 200, "{w}x{h}");
            // The edge stays in the middle: everything left of it dark-ish, right of it light-ish.
            let edge = row.iter().position(|&p| p > 108).unwrap();
            assert!((edge as i64 - i64::from(w) / 2).abs() <= 1, "edge at {edge} of {w}");
            assert!(u.iter().all(|&p| p == 90) && v.iter().all(|&p| p == 128));
        }
        assert_eq!(frame.scaled(64, 32), frame);
        assert!(matches!(frame.at_size(64, 32), std::borrow::Cow::Borrowed(_)), "its own size: not copied");
        assert_eq!(frame.at_size(32, 16).into_owned(), frame.scaled(32, 16));
    }
}
