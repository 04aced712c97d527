//! Camera pictures to I420: what a V4L2 camera gives (MJPEG, YUYV or NV12) converted to the one
//! format the encoder takes.
//!
//! YUYV goes through the `yuv` crate's packed-to-planar path (SIMD, no colour maths: the samples
//! are already YCbCr, only the chroma rows are averaged). MJPEG is decoded by `zune-jpeg` to RGB
//! and converted with BT.601 at limited range, the range VP8 and every WebRTC receiver assume; a
//! JPEG's own YCbCr is full range, so handing its planes on as they are would wash the picture out.
//! Many UVC cameras send MJPEG frames without Huffman tables (the MJPEG convention is that the
//! standard tables apply); those frames are marked so the decoder fills the standard tables in.
//! A frame of the wrong length or a JPEG that does not decode is an error, never a panic: a camera
//! that sends a torn frame costs that frame, not the call.

use yuv::{BufferStoreMut, YuvConversionMode, YuvPackedImage, YuvPlanarImageMut, YuvRange, YuvStandardMatrix};
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::{I420Frame, VideoError};

/// Pixel layouts a camera gives that are converted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraPixels {
    /// Motion JPEG: one JPEG per frame.
    Mjpeg,
    /// Packed 4:2:2, Y0 U Y1 V.
    Yuyv,
    /// Planar Y, then interleaved U and V at 4:2:0.
    Nv12,
}

/// Converts one camera frame of `width`x`height` in `pixels` to I420.
pub fn to_i420(pixels: CameraPixels, width: u32, height: u32, data: &[u8]) -> Result<I420Frame, VideoError> {
    if width == 0 || height == 0 {
        return Err(VideoError::BadSize { width, height });
    }
    match pixels {
        CameraPixels::Yuyv => yuyv_to_i420(width, height, data),
        CameraPixels::Nv12 => nv12_to_i420(width, height, data),
        CameraPixels::Mjpeg => mjpeg_to_i420(width, height, data),
    }
}

fn planar(frame: &mut I420Frame) -> YuvPlanarImageMut<'_, u8> {
    let (width, height) = (frame.width(), frame.height());
    let chroma_width = frame.chroma_width();
    let (y, u, v) = frame.planes_mut();
    YuvPlanarImageMut {
        y_plane: BufferStoreMut::Borrowed(y),
        y_stride: width,
        u_plane: BufferStoreMut::Borrowed(u),
        u_stride: chroma_width,
        v_plane: BufferStoreMut::Borrowed(v),
        v_stride: chroma_width,
        width,
        height,
    }
}

fn torn(what: &str, got: usize, wanted: usize) -> VideoError {
    VideoError::Codec(format!("{what} frame of {got} bytes, expected {wanted}"))
}

fn yuyv_to_i420(width: u32, height: u32, data: &[u8]) -> Result<I420Frame, VideoError> {
    // Bytes per row: each pair of pixels takes four.
    let stride = 4 * width.div_ceil(2);
    let wanted = stride as usize * height as usize;
    // A driver may pad the buffer past the picture; less than a picture is a torn frame.
    if data.len() < wanted {
        return Err(torn("YUYV", data.len(), wanted));
    }
    let mut frame = I420Frame::black(width, height);
    let packed = YuvPackedImage { yuy: &data[..wanted], yuy_stride: stride, width, height };
    yuv::yuyv422_to_yuv420(&mut planar(&mut frame), &packed).map_err(|e| VideoError::Codec(format!("YUYV: {e}")))?;
    Ok(frame)
}

fn nv12_to_i420(width: u32, height: u32, data: &[u8]) -> Result<I420Frame, VideoError> {
    let mut frame = I420Frame::black(width, height);
    let luma = width as usize * height as usize;
    let (chroma_width, chroma_height) = (frame.chroma_width() as usize, frame.chroma_height() as usize);
    let wanted = luma + 2 * chroma_width * chroma_height;
    if data.len() < wanted {
        return Err(torn("NV12", data.len(), wanted));
    }
    let (y, u, v) = frame.planes_mut();
    y.copy_from_slice(&data[..luma]);
    // The chroma plane interleaves U and V; I420 keeps them apart.
    for (i, pair) in data[luma..wanted].chunks_exact(2).enumerate() {
        u[i] = pair[0];
        v[i] = pair[1];
    }
    Ok(frame)
}

/// Whether a JPEG carries Huffman tables (a DHT segment before its scan).
fn has_huffman_tables(data: &[u8]) -> bool {
    let mut at = 2;
    while at + 4 <= data.len() && data[at] == 0xff {
        let marker = data[at + 1];
        match marker {
            0xc4 => return true,
            0xda => return false,
            // Fill bytes and markers without a length.
            0xff => at += 1,
            0xd0..=0xd8 | 0x01 => at += 2,
            _ => at += 2 + usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]])),
        }
    }
    false
}

fn mjpeg_to_i420(width: u32, height: u32, data: &[u8]) -> Result<I420Frame, VideoError> {
    if data.len() < 4 || data[..2] != [0xff, 0xd8] {
        return Err(VideoError::Codec("MJPEG frame without a JPEG start".into()));
    }
    // The decoder makes up the missing end of a torn frame; a camera frame that lost its end
    // (some drivers pad a frame with zeros after it) is dropped instead of shown half grey.
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end < 4 || data[end - 2..end] != [0xff, 0xd9] {
        return Err(VideoError::Codec("MJPEG frame cut short (no end of image)".into()));
    }
    // A table-less MJPEG frame gets an `AVI1` APP0 segment, the mark by which the decoder knows
    // to use the standard tables.
    let marked;
    let jpeg: &[u8] = if has_huffman_tables(data) {
        data
    } else {
        let mut copy = Vec::with_capacity(data.len() + 9);
        copy.extend_from_slice(&data[..2]);
        copy.extend_from_slice(&[0xff, 0xe0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0x00]);
        copy.extend_from_slice(&data[2..]);
        marked = copy;
        &marked
    };
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(jpeg, options);
    let rgb = decoder.decode().map_err(|e| VideoError::Codec(format!("MJPEG: {e:?}")))?;
    let info = decoder.info().ok_or_else(|| VideoError::Codec("MJPEG: no picture information".into()))?;
    let (got_width, got_height) = (u32::from(info.width), u32::from(info.height));
    if (got_width, got_height) != (width, height) || rgb.len() != 3 * width as usize * height as usize {
        return Err(VideoError::Codec(format!("MJPEG picture is {got_width}x{got_height}, the camera said {width}x{height}")));
    }
    let mut frame = I420Frame::black(width, height);
    yuv::rgb_to_yuv420(&mut planar(&mut frame), &rgb, 3 * width, YuvRange::Limited, YuvStandardMatrix::Bt601, YuvConversionMode::Balanced)
        .map_err(|e| VideoError::Codec(format!("MJPEG colour: {e}")))?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern;

    /// The test pattern packed as a camera would give it in YUYV.
    fn as_yuyv(frame: &I420Frame) -> Vec<u8> {
        let (y, u, v) = frame.planes();
        let (w, h, cw) = (frame.width() as usize, frame.height() as usize, frame.chroma_width() as usize);
        let mut out = Vec::with_capacity(w * h * 2);
        for row in 0..h {
            for pair in 0..w / 2 {
                let c = (row / 2) * cw + pair;
                out.extend_from_slice(&[y[row * w + 2 * pair], u[c], y[row * w + 2 * pair + 1], v[c]]);
            }
        }
        out
    }

    /// The test pattern as RGB (BT.601, limited range), for the JPEG encoder.
    fn as_rgb(frame: &I420Frame) -> Vec<u8> {
        let (y, u, v) = frame.planes();
        let (w, h, cw) = (frame.width() as usize, frame.height() as usize, frame.chroma_width() as usize);
        let mut out = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            for col in 0..w {
                let c = (row / 2) * cw + col / 2;
                let (l, cb, cr) = (1.164 * (f64::from(y[row * w + col]) - 16.0), f64::from(u[c]) - 128.0, f64::from(v[c]) - 128.0);
                for value in [l + 1.596 * cr, l - 0.392 * cb - 0.813 * cr, l + 2.017 * cb] {
                    out.push(value.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        out
    }

    fn jpeg(frame: &I420Frame) -> Vec<u8> {
        let mut out = Vec::new();
        let encoder = jpeg_encoder::Encoder::new(&mut out, 85);
        encoder.encode(&as_rgb(frame), frame.width() as u16, frame.height() as u16, jpeg_encoder::ColorType::Rgb).unwrap();
        out
    }

    /// Mean absolute difference of the luma planes.
    fn luma_error(a: &I420Frame, b: &I420Frame) -> f64 {
        let (ya, yb) = (a.planes().0, b.planes().0);
        ya.iter().zip(yb).map(|(&p, &q)| f64::from(p.abs_diff(q))).sum::<f64>() / ya.len() as f64
    }

    #[test]
    fn yuyv_becomes_the_same_picture() {
        let sent = pattern::draw(640, 360, 4242);
        let got = to_i420(CameraPixels::Yuyv, 640, 360, &as_yuyv(&sent)).unwrap();
        assert_eq!(pattern::read_number(&got), Some(4242));
        assert_eq!(got.planes().0, sent.planes().0, "luma passes through untouched");
        assert!(luma_error(&got, &sent) < 0.01);
    }

    #[test]
    fn nv12_becomes_the_same_picture() {
        let sent = pattern::draw(320, 180, 7);
        let (y, u, v) = sent.planes();
        let mut nv12 = y.to_vec();
        for (a, b) in u.iter().zip(v) {
            nv12.extend_from_slice(&[*a, *b]);
        }
        assert_eq!(to_i420(CameraPixels::Nv12, 320, 180, &nv12).unwrap(), sent);
    }

    #[test]
    fn mjpeg_with_and_without_huffman_tables_decodes_at_limited_range() {
        let sent = pattern::draw(640, 360, 99);
        let with_tables = jpeg(&sent);
        assert!(has_huffman_tables(&with_tables));
        let got = to_i420(CameraPixels::Mjpeg, 640, 360, &with_tables).unwrap();
        assert_eq!(pattern::read_number(&got), Some(99));
        // JPEG at quality 85 on the pattern's hard edges: about 4 levels off on average.
        assert!(luma_error(&got, &sent) < 6.0, "luma off by {} on average", luma_error(&got, &sent));
        // Limited range: black stays at 16, not 0.
        assert!(got.planes().0.iter().all(|&l| l >= 14), "luma below the limited range");

        // The same frame as a UVC camera sends it: every DHT segment cut out.
        let mut stripped = with_tables[..2].to_vec();
        let mut at = 2;
        loop {
            let marker = with_tables[at + 1];
            if marker == 0xda {
                stripped.extend_from_slice(&with_tables[at..]);
                break;
            }
            let len = 2 + usize::from(u16::from_be_bytes([with_tables[at + 2], with_tables[at + 3]]));
            if marker != 0xc4 {
                stripped.extend_from_slice(&with_tables[at..at + len]);
            }
            at += len;
        }
        assert!(!has_huffman_tables(&stripped));
        assert_eq!(to_i420(CameraPixels::Mjpeg, 640, 360, &stripped).unwrap(), got);
    }

    #[test]
    fn torn_and_corrupt_frames_are_errors() {
        let sent = pattern::draw(640, 360, 1);
        let yuyv = as_yuyv(&sent);
        assert!(matches!(to_i420(CameraPixels::Yuyv, 640, 360, &yuyv[..yuyv.len() / 2]), Err(VideoError::Codec(_))));
        assert!(matches!(to_i420(CameraPixels::Nv12, 640, 360, &[0; 100]), Err(VideoError::Codec(_))));
        let jpeg = jpeg(&sent);
        assert!(matches!(to_i420(CameraPixels::Mjpeg, 640, 360, &jpeg[..jpeg.len() / 3]), Err(VideoError::Codec(_))));
        assert!(matches!(to_i420(CameraPixels::Mjpeg, 640, 360, b"not a jpeg at all"), Err(VideoError::Codec(_))));
        // A JPEG of another size than the camera announced.
        assert!(matches!(to_i420(CameraPixels::Mjpeg, 320, 180, &jpeg), Err(VideoError::Codec(_))));
        assert!(matches!(to_i420(CameraPixels::Yuyv, 0, 360, &yuyv), Err(VideoError::BadSize { .. })));
    }
}
