//! YUV4MPEG2 (Y4M) files: what a `file:` camera plays and what a recording writes.
//!
//! Only 4:2:0 at 8 bits is taken: `C420jpeg`, `C420mpeg2`, `C420paldv`, `C420`, or no `C` at all
//! (the format's default is 4:2:0). Those are the files Chromium's fake camera takes and ffmpeg
//! writes by default; the chroma siting the variants name is not told apart (it moves chroma by
//! half a pixel). Anything else (4:2:2, 4:4:4, mono, 10 bits) is refused with
//! [`VideoError::Unsupported`] when the file is opened, and a file that ends inside a frame with
//! [`VideoError::Truncated`].

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::frame::i420_len;
use crate::{I420Frame, VideoError};

/// Longest header or frame line accepted (a real one is well under 100 bytes).
const MAX_LINE: usize = 4096;

/// A Y4M file being read.
pub struct Y4mReader<R> {
    input: R,
    width: u32,
    height: u32,
    fps: (u32, u32),
    /// Where the first frame starts, for [`Y4mReader::rewind`].
    data_start: u64,
}

impl Y4mReader<BufReader<std::fs::File>> {
    /// Opens a file and reads its header.
    pub fn open(path: &Path) -> Result<Self, VideoError> {
        let file = std::fs::File::open(path).map_err(|e| VideoError::Io(format!("{}: {e}", path.display())))?;
        Y4mReader::new(BufReader::new(file))
    }
}

impl<R: BufRead + Seek> Y4mReader<R> {
    /// Reads the header from `input`.
    pub fn new(mut input: R) -> Result<Self, VideoError> {
        let mut magic = [0u8; 10];
        let got = input.by_ref().take(10).read(&mut magic).map_err(io)?;
        // Say "not Y4M" for anything else, however short, rather than "truncated".
        let looks_like_y4m = magic[..got].starts_with(b"YUV4MPEG2") || b"YUV4MPEG2".starts_with(&magic[..got]);
        if got == 0 || !looks_like_y4m {
            return Err(VideoError::BadY4m("not a YUV4MPEG2 file".into()));
        }
        input.seek(SeekFrom::Start(0)).map_err(io)?;
        let header = read_line(&mut input)?.ok_or(VideoError::Truncated)?;
        let mut words = header.split(' ');
        if words.next() != Some("YUV4MPEG2") {
            return Err(VideoError::BadY4m("not a YUV4MPEG2 file".into()));
        }
        let (mut width, mut height, mut fps) = (0, 0, (30, 1));
        for word in words.filter(|w| !w.is_empty()) {
            let (tag, value) = word.split_at(1);
            match tag {
                "W" => width = value.parse().map_err(|_| VideoError::BadY4m(format!("width {value:?}")))?,
                "H" => height = value.parse().map_err(|_| VideoError::BadY4m(format!("height {value:?}")))?,
                "F" => {
                    let (num, den) = value.split_once(':').ok_or_else(|| VideoError::BadY4m(format!("frame rate {value:?}")))?;
                    let (num, den): (u32, u32) = match (num.parse(), den.parse()) {
                        (Ok(n), Ok(d)) if n > 0 && d > 0 => (n, d),
                        _ => return Err(VideoError::BadY4m(format!("frame rate {value:?}"))),
                    };
                    fps = (num, den);
                }
                "C" if matches!(value, "420jpeg" | "420mpeg2" | "420paldv" | "420") => {}
                "C" => return Err(VideoError::Unsupported(format!("colour space C{value} (only 4:2:0 at 8 bits)"))),
                "I" if value != "p" && value != "?" => return Err(VideoError::Unsupported(format!("interlacing I{value}"))),
                // Aspect ratio, interlacing `p`, and extensions (`X…`) change nothing here.
                _ => {}
            }
        }
        if width == 0 || height == 0 || width > 16_384 || height > 16_384 {
            return Err(VideoError::BadY4m(format!("size {width}x{height}")));
        }
        let data_start = input.stream_position().map_err(io)?;
        Ok(Y4mReader { input, width, height, fps, data_start })
    }

    /// Picture width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Picture height.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Frames per second.
    pub fn fps(&self) -> f64 {
        f64::from(self.fps.0) / f64::from(self.fps.1)
    }

    /// The next frame; `None` at the end of the file.
    pub fn read_frame(&mut self) -> Result<Option<I420Frame>, VideoError> {
        let Some(line) = read_line(&mut self.input)? else { return Ok(None) };
        if line != "FRAME" && !line.starts_with("FRAME ") {
            return Err(VideoError::BadY4m(format!("expected FRAME, found {:?}", line.chars().take(20).collect::<String>())));
        }
        let mut data = vec![0u8; i420_len(self.width, self.height)];
        self.input.read_exact(&mut data).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => VideoError::Truncated,
            _ => io(e),
        })?;
        I420Frame::from_bytes(self.width, self.height, data).map(Some)
    }

    /// Goes back to the first frame (a `file:` camera loops).
    pub fn rewind(&mut self) -> Result<(), VideoError> {
        self.input.seek(SeekFrom::Start(self.data_start)).map_err(io)?;
        Ok(())
    }
}

fn io(e: std::io::Error) -> VideoError {
    VideoError::Io(e.to_string())
}

/// One line without its `\n`; `None` at a clean end of input.
fn read_line(input: &mut impl BufRead) -> Result<Option<String>, VideoError> {
    let mut line = Vec::new();
    let read = input.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut line).map_err(io)?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if read >= MAX_LINE { VideoError::BadY4m("a line too long".into()) } else { VideoError::Truncated });
    }
    line.pop();
    String::from_utf8(line).map(Some).map_err(|_| VideoError::BadY4m("a header that is not text".into()))
}

/// A Y4M file being written: one size (a Y4M has one header), 4:2:0.
pub struct Y4mWriter<W: Write> {
    output: W,
    width: u32,
    height: u32,
}

impl Y4mWriter<std::io::BufWriter<std::fs::File>> {
    /// Creates (or truncates) a file.
    pub fn create(path: &Path, width: u32, height: u32, fps: u32) -> Result<Self, VideoError> {
        let file = std::fs::File::create(path).map_err(|e| VideoError::Io(format!("{}: {e}", path.display())))?;
        Y4mWriter::new(std::io::BufWriter::new(file), width, height, fps)
    }
}

impl<W: Write> Y4mWriter<W> {
    /// Writes the header to `output`.
    pub fn new(mut output: W, width: u32, height: u32, fps: u32) -> Result<Self, VideoError> {
        if width == 0 || height == 0 {
            return Err(VideoError::BadSize { width, height });
        }
        writeln!(output, "YUV4MPEG2 W{width} H{height} F{}:1 Ip A1:1 C420jpeg", fps.max(1)).map_err(io)?;
        Ok(Y4mWriter { output, width, height })
    }

    /// The size every frame is written at.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Appends a frame, scaled to the file's size if it has another (never cropped).
    pub fn write_frame(&mut self, frame: &I420Frame) -> Result<(), VideoError> {
        let frame = frame.at_size(self.width, self.height);
        self.output.write_all(b"FRAME\n").map_err(io)?;
        self.output.write_all(frame.as_bytes()).map_err(io)
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> Result<(), VideoError> {
        self.output.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern;
    use std::io::Cursor;

    fn written(frames: &[I420Frame], width: u32, height: u32) -> Vec<u8> {
        let mut writer = Y4mWriter::new(Vec::new(), width, height, 30).unwrap();
        for frame in frames {
            writer.write_frame(frame).unwrap();
        }
        writer.output
    }

    #[test]
    fn written_files_read_back_and_loop() {
        let frames: Vec<I420Frame> = (0..3).map(|n| pattern::draw(64, 36, n)).collect();
        let bytes = written(&frames, 64, 36);
        assert!(bytes.starts_with(b"YUV4MPEG2 W64 H36 F30:1 Ip A1:1 C420jpeg\nFRAME\n"));
        let mut reader = Y4mReader::new(Cursor::new(bytes)).unwrap();
        assert_eq!((reader.width(), reader.height(), reader.fps()), (64, 36, 30.0));
        for frame in &frames {
            assert_eq!(reader.read_frame().unwrap().as_ref(), Some(frame));
        }
        assert_eq!(reader.read_frame().unwrap(), None);
        reader.rewind().unwrap();
        assert_eq!(reader.read_frame().unwrap().as_ref(), Some(&frames[0]));
    }

    #[test]
    fn a_recording_keeps_its_first_size_by_scaling() {
        let small = pattern::draw(320, 180, 7);
        let bytes = written(&[pattern::draw(640, 360, 6), small], 640, 360);
        let mut reader = Y4mReader::new(Cursor::new(bytes)).unwrap();
        reader.read_frame().unwrap();
        let upscaled = reader.read_frame().unwrap().unwrap();
        assert_eq!((upscaled.width(), upscaled.height()), (640, 360));
        assert_eq!(pattern::read_number(&upscaled), Some(7), "the whole picture, not a crop");
    }

    #[test]
    fn the_420_variants_and_fractional_rates_are_taken() {
        for header in ["C420mpeg2", "C420paldv", "C420", ""] {
            let text = format!("YUV4MPEG2 W4 H2 F30000:1001 {header}\nFRAME\n");
            let mut bytes = text.into_bytes();
            bytes.extend_from_slice(&[1u8; 12]);
            let mut reader = Y4mReader::new(Cursor::new(bytes)).unwrap();
            assert!((reader.fps() - 29.97).abs() < 0.01);
            assert!(reader.read_frame().unwrap().is_some(), "{header}");
        }
    }

    #[test]
    fn bad_files_are_refused_with_their_reason() {
        let cases: [(&[u8], &str); 7] = [
            (b"YUV4MPEG2 W4 H2 F30:1 C444\n", "Unsupported"),
            (b"YUV4MPEG2 W4 H2 F30:1 C420p10\n", "Unsupported"),
            (b"YUV4MPEG2 W4 H2 F30:1 Ib\n", "Unsupported"),
            (b"RIFF....", "BadY4m"),
            (b"YUV4MPEG2 W0 H2\n", "BadY4m"),
            (b"YUV4MPEG2 W4 H2 F0:1\n", "BadY4m"),
            (b"YUV4MPEG2 W4 H2", "Truncated"),
        ];
        for (bytes, want) in cases {
            let err = Y4mReader::new(Cursor::new(bytes.to_vec())).err().unwrap_or_else(|| panic!("{bytes:?} was taken"));
            assert!(format!("{err:?}").starts_with(want), "{bytes:?}: {err:?}");
        }
        // A frame cut short, and something else where a frame should start.
        let mut bytes = b"YUV4MPEG2 W4 H2\nFRAME\n".to_vec();
        bytes.extend_from_slice(&[0u8; 5]);
        let mut reader = Y4mReader::new(Cursor::new(bytes)).unwrap();
        assert!(matches!(reader.read_frame(), Err(VideoError::Truncated)));
        let mut reader = Y4mReader::new(Cursor::new(b"YUV4MPEG2 W4 H2\nGARBAGE\n".to_vec())).unwrap();
        assert!(matches!(reader.read_frame(), Err(VideoError::BadY4m(_))));
    }
}
