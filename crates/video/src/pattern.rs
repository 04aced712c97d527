//! A moving test picture that carries its frame number, so a far end can check what it decoded.
//!
//! The picture: diagonal colour bars that slide two pixels a frame and a bright square that
//! travels around, so the encoder always has motion to code. Along the top runs the stamp: 32
//! blocks across the whole width, as tall as they are wide, black or white: the frame number's 24 bits (most
//! significant first) and an 8-bit check. Blocks that large and that contrasted survive VP8 at
//! low bitrates and scaling down to 160 pixels wide; [`read_number`] averages the middle of each
//! block and refuses a stamp whose check does not match, so a misread is an error, not a wrong
//! number.

use crate::I420Frame;

const BITS: u32 = 24;

/// The numbers a stamp carries: 0 to 2^24 - 1.
pub const NUMBER_MASK: u32 = (1 << BITS) - 1;
const BLOCKS: u32 = 32;
const DARK: u8 = 16;
const LIGHT: u8 = 235;

/// The stamp's 8-bit check of a 24-bit number.
fn check_byte(number: u32) -> u32 {
    let [a, b, c, _] = number.to_le_bytes();
    u32::from(a ^ b.rotate_left(3) ^ c.rotate_left(5) ^ 0xa5)
}

/// One period of the bars along a line: six bands of 24.
const BAR_PERIOD: usize = 6 * 24;

/// The test picture for frame `number` (modulo 2^24).
pub fn draw(width: u32, height: u32, number: u32) -> I420Frame {
    let (w, cw, ch) = (width as usize, width.div_ceil(2) as usize, height.div_ceil(2) as usize);
    let shift = number.wrapping_mul(2) as usize;
    // The bars are periodic along each line, so each row is a slice of one precomputed line
    // started where that row's diagonal puts it: a copy per row instead of a division per pixel,
    // and no black picture painted over (the synthetic camera runs at 720p30 in the app's
    // benchmarks, beside the real work).
    let band = |i: usize| (i / 24 % 6) as u8;
    let line: Vec<u8> = (0..w + BAR_PERIOD).map(|i| 40 + band(i) * 30).collect();
    let mut data = Vec::with_capacity(crate::frame::i420_len(width, height));
    for row in 0..height as usize {
        let from = (row + shift) % BAR_PERIOD;
        data.extend_from_slice(&line[from..from + w]);
    }
    // Chroma steps two positions a sample, from an even start (the shift is even).
    for (base, step) in [(64i16, 24i16), (192, -24)] {
        let line: Vec<u8> = (0..cw + BAR_PERIOD / 2).map(|c| (base + step * i16::from(band(2 * c))) as u8).collect();
        for row in 0..ch {
            let from = (2 * row + shift) % BAR_PERIOD / 2;
            data.extend_from_slice(&line[from..from + cw]);
        }
    }
    // Only a zero size is refused, and that picture has nothing to draw.
    let Ok(mut frame) = I420Frame::from_bytes(width, height, data) else { return I420Frame::black(width, height) };
    let (y, _, _) = frame.planes_mut();
    // A square going round, a quarter of the height on a side.
    let side = (height / 4).max(2);
    let span_x = width.saturating_sub(side).max(1);
    let span_y = height.saturating_sub(side + stamp_height(width)).max(1);
    let (sx, sy) = (number.wrapping_mul(5) % span_x, stamp_height(width) + number.wrapping_mul(3) % span_y);
    for row in sy..(sy + side).min(height) {
        for col in sx..(sx + side).min(width) {
            y[(row * width + col) as usize] = LIGHT;
        }
    }
    stamp(&mut frame, number);
    frame
}

fn stamp_height(width: u32) -> u32 {
    (width / BLOCKS).max(1)
}

/// Where block `index` of the stamp starts and ends across a picture `width` wide.
fn block_span(index: u32, width: u32) -> (u32, u32) {
    (index * width / BLOCKS, (index + 1) * width / BLOCKS)
}

/// Writes the stamp of `number` over the top of `frame` (neutral chroma under it).
pub fn stamp(frame: &mut I420Frame, number: u32) {
    let (width, height) = (frame.width(), frame.height());
    let number = number & ((1 << BITS) - 1);
    let word = (number << 8) | check_byte(number);
    let (cw, ch) = (frame.chroma_width(), frame.chroma_height());
    let (y, u, v) = frame.planes_mut();
    for index in 0..BLOCKS {
        let (from, to) = block_span(index, width);
        let value = if word >> (BLOCKS - 1 - index) & 1 == 1 { LIGHT } else { DARK };
        for row in 0..stamp_height(width).min(height) {
            y[(row * width + from) as usize..(row * width + to) as usize].fill(value);
        }
    }
    for row in 0..stamp_height(width).div_ceil(2).min(ch) {
        u[(row * cw) as usize..((row + 1) * cw) as usize].fill(128);
        v[(row * cw) as usize..((row + 1) * cw) as usize].fill(128);
    }
}

/// The frame number stamped on `frame`, if the stamp reads back with its check.
pub fn read_number(frame: &I420Frame) -> Option<u32> {
    let width = frame.width();
    let rows = stamp_height(width);
    if rows < 2 || frame.height() < rows {
        return None;
    }
    let (y, _, _) = frame.planes();
    let mut word = 0u32;
    for index in 0..BLOCKS {
        // The middle half of each block, away from edges that coding and scaling blur.
        let (from, to) = block_span(index, width);
        let (from, to) = (from + (to - from) / 4, to - (to - from) / 4);
        let (top, bottom) = (rows / 4, rows - rows / 4);
        let (mut sum, mut count) = (0u32, 0u32);
        for row in top..bottom {
            for col in from..to.max(from + 1) {
                sum += u32::from(y[(row * width + col) as usize]);
                count += 1;
            }
        }
        let bit = u32::from(sum / count.max(1) > u32::from(DARK + LIGHT) / 2);
        word = (word << 1) | bit;
    }
    let number = word >> 8;
    (word & 0xff == check_byte(number)).then_some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_back_at_every_size_and_after_scaling() {
        for (w, h) in [(640, 360), (1280, 720), (320, 180), (360, 640), (480, 270)] {
            for n in [0, 1, 29, 255, 256, 65_535, 1_000_003, (1 << 24) - 1] {
                let frame = draw(w, h, n);
                assert_eq!(read_number(&frame), Some(n), "{w}x{h} #{n}");
                assert_eq!(read_number(&frame.scaled(w / 2, h / 2)), Some(n), "{w}x{h} #{n} halved");
            }
        }
        assert_eq!(read_number(&draw(640, 360, (1 << 24) + 5)), Some(5), "numbers wrap at 2^24");
    }

    /// The bars as first written, a formula per pixel: what `draw`'s precomputed lines must equal.
    fn bars_by_formula(width: u32, height: u32, number: u32) -> I420Frame {
        let mut frame = I420Frame::black(width, height);
        let (cw, ch) = (frame.chroma_width(), frame.chroma_height());
        let (y, u, v) = frame.planes_mut();
        let shift = number.wrapping_mul(2);
        for row in 0..height {
            for col in 0..width {
                y[(row * width + col) as usize] = 40 + ((col + row + shift) / 24 % 6 * 30) as u8;
            }
        }
        for row in 0..ch {
            for col in 0..cw {
                let band = (2 * col + 2 * row + shift) / 24 % 6;
                u[(row * cw + col) as usize] = 64 + (band * 24) as u8;
                v[(row * cw + col) as usize] = 192 - (band * 24) as u8;
            }
        }
        frame
    }

    #[test]
    fn the_bars_match_their_formula_everywhere_but_the_square_and_the_stamp() {
        for (w, h) in [(1280, 720), (641, 361), (320, 180), (2, 2)] {
            for n in [0, 1, 71, 72, 143, 1_000_003] {
                let (drawn, expected) = (draw(w, h, n), bars_by_formula(w, h, n));
                let (dy, du, dv) = drawn.planes();
                let (ey, eu, ev) = expected.planes();
                let below_stamp = (stamp_height(w).div_ceil(2) * drawn.chroma_width()) as usize;
                assert_eq!((&du[below_stamp..], &dv[below_stamp..]), (&eu[below_stamp..], &ev[below_stamp..]), "{w}x{h} #{n}: chroma below the stamp");
                // Luma below the stamp, outside the square's column range of this frame.
                let side = (h / 4).max(2);
                let sx = n.wrapping_mul(5) % w.saturating_sub(side).max(1);
                for row in stamp_height(w)..h {
                    for col in (0..w).filter(|c| *c < sx || *c >= sx + side) {
                        let at = (row * w + col) as usize;
                        assert_eq!(dy[at], ey[at], "{w}x{h} #{n} at {col},{row}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_picture_without_a_stamp_reads_as_none_and_pictures_move() {
        assert_eq!(read_number(&I420Frame::black(640, 360)), None);
        let mut grey = I420Frame::black(640, 360);
        grey.planes_mut().0.fill(128);
        assert_eq!(read_number(&grey), None);
        assert_ne!(draw(640, 360, 1).planes().0[360 * 640 / 2..], draw(640, 360, 2).planes().0[360 * 640 / 2..], "frames differ below the stamp");
    }
}
