//! VP8 over libvpx (Debian's libvpx-dev, through `env-libvpx-sys`): a thin wrapper of our own,
//! because `vpx-encode` never sets cpu-used (libvpx then runs at its slowest), cannot force a
//! keyframe (a PLI could not be answered) and cannot change the bitrate of a running encoder.
//!
//! The encoder uses WebRTC's realtime settings for VP8 (libwebrtc `libvpx_vp8_encoder.cc`): no
//! lag, CBR with q 2–56, undershoot 100 % and overshoot 15 %, a 500/600/1000 ms buffer, frame
//! dropping when the buffer runs dry, cpu-used −6, the static threshold at 1, and intra frames
//! capped so a keyframe does not flood the link. Keyframes come when asked for
//! ([`Vp8Encoder::encode`] with `force_keyframe`, what a PLI does) and at least every
//! [`KEYFRAME_EVERY_S`] seconds, so a receiver that missed a request still recovers.
//!
//! Both wrap a `vpx_codec_ctx_t` that only they touch, one thread at a time (`&mut self`), which
//! is what makes them `Send`. All unsafe code of the crate is here.

use std::ffi::CStr;
use std::os::raw::{c_int, c_uint, c_ulong};

use vpx_sys as vpx;

use crate::{I420Frame, VideoError};

/// Longest run without a keyframe, in seconds.
pub const KEYFRAME_EVERY_S: u32 = 20;

/// How an encoder starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    /// Picture width; even.
    pub width: u32,
    /// Picture height; even.
    pub height: u32,
    /// Frames per second the encoder is fed.
    pub fps: u32,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Encoding threads (1 up to VGA is what WebRTC uses).
    pub threads: u32,
}

/// One encoded picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The VP8 frame, ready for the RTP packetizer.
    pub data: Vec<u8>,
    /// Whether it can be decoded on its own.
    pub keyframe: bool,
}

/// Whether `frame` (a whole VP8 frame) is a keyframe: bit 0 of its first byte is 0 (RFC 6386).
pub fn is_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 == 0)
}

/// The picture size a keyframe sets: after its three-byte tag and the start code 9d 01 2a, the
/// width and height in 14 bits each (the top two bits scale, which decoders ignore) (RFC 6386
/// §9.1). `None` for a delta frame or anything else.
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    if !is_keyframe(frame) || frame.len() < 10 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let side = |at: usize| u32::from(u16::from_le_bytes([frame[at], frame[at + 1]]) & 0x3fff);
    let (width, height) = (side(6), side(8));
    (width > 0 && height > 0).then_some((width, height))
}

/// A VP8 encoder.
pub struct Vp8Encoder {
    context: Box<vpx::vpx_codec_ctx_t>,
    config: vpx::vpx_codec_enc_cfg_t,
    settings: EncoderSettings,
    pts: i64,
}

// SAFETY: the context is owned by this value alone and libvpx keeps no thread-local state for
// it; every use goes through `&mut self`, so it is never used from two threads at once.
unsafe impl Send for Vp8Encoder {}

fn check(context: &mut vpx::vpx_codec_ctx_t, status: vpx::vpx_codec_err_t, what: &str) -> Result<(), VideoError> {
    if status == vpx::vpx_codec_err_t::VPX_CODEC_OK {
        return Ok(());
    }
    // SAFETY: vpx_codec_error returns a static string (or the context's last error message),
    // valid for as long as the context, and we copy it at once.
    let message = unsafe { CStr::from_ptr(vpx::vpx_codec_error(context)) }.to_string_lossy().into_owned();
    Err(VideoError::Codec(format!("{what}: {message} ({status:?})")))
}

impl Vp8Encoder {
    /// An encoder for pictures of the given size.
    pub fn new(settings: EncoderSettings) -> Result<Vp8Encoder, VideoError> {
        let EncoderSettings { width, height, fps, bitrate_kbps, threads } = settings;
        if width == 0 || height == 0 || width % 2 != 0 || height % 2 != 0 {
            return Err(VideoError::BadSize { width, height });
        }
        // SAFETY: vpx_codec_enc_config_default writes every field of the config for the VP8
        // interface (a static libvpx object); it is read only after it said so. (All-zero bytes
        // are not a valid config: some of its enums have no zero value.)
        let mut config = std::mem::MaybeUninit::<vpx::vpx_codec_enc_cfg_t>::uninit();
        let status = unsafe { vpx::vpx_codec_enc_config_default(vpx::vpx_codec_vp8_cx(), config.as_mut_ptr(), 0) };
        if status != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(VideoError::Codec(format!("default VP8 configuration: {status:?}")));
        }
        let mut config = unsafe { config.assume_init() };
        config.g_w = width;
        config.g_h = height;
        config.g_timebase = vpx::vpx_rational { num: 1, den: fps.max(1) as c_int };
        config.g_threads = threads.max(1);
        config.g_lag_in_frames = 0;
        config.g_error_resilient = vpx::VPX_ERROR_RESILIENT_DEFAULT;
        config.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        config.rc_target_bitrate = bitrate_kbps.max(30);
        config.rc_min_quantizer = 2;
        config.rc_max_quantizer = 56;
        config.rc_undershoot_pct = 100;
        config.rc_overshoot_pct = 15;
        config.rc_buf_initial_sz = 500;
        config.rc_buf_optimal_sz = 600;
        config.rc_buf_sz = 1000;
        config.rc_dropframe_thresh = 30;
        config.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
        config.kf_min_dist = 0;
        config.kf_max_dist = KEYFRAME_EVERY_S * fps.max(1);

        // SAFETY: a zeroed context is what vpx_codec_enc_init_ver expects to initialise; it is
        // boxed so its address stays put for libvpx, which keeps pointers into it.
        let mut context: Box<vpx::vpx_codec_ctx_t> = Box::new(unsafe { std::mem::zeroed() });
        let status = unsafe {
            vpx::vpx_codec_enc_init_ver(&mut *context, vpx::vpx_codec_vp8_cx(), &config, 0, vpx::VPX_ENCODER_ABI_VERSION as c_int)
        };
        if status != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(VideoError::Codec(format!("starting the VP8 encoder: {status:?}")));
        }
        let mut encoder = Vp8Encoder { context, config, settings, pts: 0 };
        // Max intra bitrate, WebRTC's formula: 0.5 × the buffer's optimal size × fps / 10, in
        // percent of the per-frame bandwidth, at least 300.
        let max_intra = (600 * fps.max(1) / 20).max(300) as c_int;
        for (control, value) in [
            (vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED, -6),
            (vpx::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD, 1),
            (vpx::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY, 0),
            (vpx::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS, 0),
            (vpx::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT, max_intra),
        ] {
            // SAFETY: each of these controls takes one int argument, which is what is passed.
            let status = unsafe { vpx::vpx_codec_control_(&mut *encoder.context, control as c_int, value) };
            check(&mut encoder.context, status, &format!("{control:?}"))?;
        }
        Ok(encoder)
    }

    /// What it was started with (the bitrate as it is now).
    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Changes the target bitrate from the next frame on.
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError> {
        let kbps = kbps.max(30);
        if kbps == self.config.rc_target_bitrate {
            return Ok(());
        }
        self.config.rc_target_bitrate = kbps;
        // SAFETY: the context is initialised and the config is the one it was made with, with
        // one field changed, as vpx_codec_enc_config_set allows.
        let status = unsafe { vpx::vpx_codec_enc_config_set(&mut *self.context, &self.config) };
        check(&mut self.context, status, "changing the bitrate")?;
        self.settings.bitrate_kbps = kbps;
        Ok(())
    }

    /// Encodes one picture (of the encoder's size). `None` when rate control dropped it.
    pub fn encode(&mut self, frame: &I420Frame, force_keyframe: bool) -> Result<Option<EncodedFrame>, VideoError> {
        if (frame.width(), frame.height()) != (self.settings.width, self.settings.height) {
            return Err(VideoError::BadSize { width: frame.width(), height: frame.height() });
        }
        // SAFETY: vpx_img_wrap only records the pointer and strides in `image`, which lives for
        // this call; libvpx reads the planes during vpx_codec_encode and never writes them (the
        // pointer is mut only in its C signature). Even sizes make its strides (width, width/2)
        // match our tightly packed planes.
        let mut image = std::mem::MaybeUninit::<vpx::vpx_image_t>::uninit();
        let wrapped = unsafe {
            vpx::vpx_img_wrap(
                image.as_mut_ptr(),
                vpx::vpx_img_fmt::VPX_IMG_FMT_I420,
                frame.width() as c_uint,
                frame.height() as c_uint,
                1,
                frame.as_bytes().as_ptr() as *mut u8,
            )
        };
        if wrapped.is_null() {
            return Err(VideoError::Codec("wrapping the picture".into()));
        }
        // SAFETY: vpx_img_wrap succeeded, so it initialised every field of `image`.
        let image = unsafe { image.assume_init() };
        let flags = if force_keyframe { vpx::VPX_EFLAG_FORCE_KF as vpx::vpx_enc_frame_flags_t } else { 0 };
        // SAFETY: the context is initialised and `image` describes a live picture of its size.
        let status = unsafe { vpx::vpx_codec_encode(&mut *self.context, &image, self.pts, 1, flags, vpx::VPX_DL_REALTIME as c_ulong) };
        check(&mut self.context, status, "encoding")?;
        self.pts += 1;
        let mut encoded: Option<EncodedFrame> = None;
        let mut iterator: vpx::vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: iterating the packets of the frame just encoded; each packet and its buffer
            // stay valid until the next call into the encoder, and we copy them before that.
            let packet = unsafe { vpx::vpx_codec_get_cx_data(&mut *self.context, &mut iterator) };
            if packet.is_null() {
                break;
            }
            let packet = unsafe { &*packet };
            if packet.kind != vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: for a frame packet, `data.frame` is the active member of the union.
            let data = unsafe { packet.data.frame };
            let bytes = unsafe { std::slice::from_raw_parts(data.buf as *const u8, data.sz as usize) };
            let keyframe = data.flags & vpx::VPX_FRAME_IS_KEY != 0;
            match &mut encoded {
                // With no lag and no partitions a frame is one packet; more are appended.
                Some(frame) => frame.data.extend_from_slice(bytes),
                None => encoded = Some(EncodedFrame { data: bytes.to_vec(), keyframe }),
            }
        }
        Ok(encoded)
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed once, here.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.context);
        }
    }
}

/// A VP8 decoder.
pub struct Vp8Decoder {
    context: Box<vpx::vpx_codec_ctx_t>,
}

// SAFETY: as for the encoder: owned context, used through `&mut self` only.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    /// A decoder on one thread (the caller's).
    pub fn new() -> Result<Vp8Decoder, VideoError> {
        let config = vpx::vpx_codec_dec_cfg_t { threads: 1, w: 0, h: 0 };
        // SAFETY: as in the encoder: a zeroed, boxed context for vpx_codec_dec_init_ver.
        let mut context: Box<vpx::vpx_codec_ctx_t> = Box::new(unsafe { std::mem::zeroed() });
        let status = unsafe {
            vpx::vpx_codec_dec_init_ver(&mut *context, vpx::vpx_codec_vp8_dx(), &config, 0, vpx::VPX_DECODER_ABI_VERSION as c_int)
        };
        if status != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(VideoError::Codec(format!("starting the VP8 decoder: {status:?}")));
        }
        Ok(Vp8Decoder { context })
    }

    /// Decodes one whole VP8 frame. An error means the data is not VP8 or does not follow from
    /// what came before (the caller asks for a keyframe); `None` means no picture came out.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, VideoError> {
        if data.is_empty() {
            return Err(VideoError::Codec("an empty frame".into()));
        }
        // SAFETY: libvpx reads `data` during the call only.
        let status = unsafe {
            vpx::vpx_codec_decode(&mut *self.context, data.as_ptr(), data.len() as c_uint, std::ptr::null_mut(), 0)
        };
        check(&mut self.context, status, "decoding")?;
        let mut iterator: vpx::vpx_codec_iter_t = std::ptr::null();
        // SAFETY: the picture returned stays valid until the next decode call; it is copied out
        // below, plane by plane, within the sizes and strides it states.
        let image = unsafe { vpx::vpx_codec_get_frame(&mut *self.context, &mut iterator) };
        if image.is_null() {
            return Ok(None);
        }
        let image = unsafe { &*image };
        if image.fmt != vpx::vpx_img_fmt::VPX_IMG_FMT_I420 {
            return Err(VideoError::Codec(format!("the decoder gave {:?}, not I420", image.fmt)));
        }
        let (width, height) = (image.d_w, image.d_h);
        let mut frame = I420Frame::black(width, height);
        let (cw, ch) = (frame.chroma_width() as usize, frame.chroma_height() as usize);
        let (y, u, v) = frame.planes_mut();
        for (plane, out, w, h) in [(0usize, y, width as usize, height as usize), (1, u, cw, ch), (2, v, cw, ch)] {
            let stride = image.stride[plane] as usize;
            for row in 0..h {
                let source = unsafe { std::slice::from_raw_parts(image.planes[plane].add(row * stride), w) };
                out[row * w..][..w].copy_from_slice(source);
            }
        }
        Ok(Some(frame))
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.context);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern;

    fn settings(width: u32, height: u32, kbps: u32) -> EncoderSettings {
        EncoderSettings { width, height, fps: 30, bitrate_kbps: kbps, threads: 1 }
    }

    #[test]
    fn the_test_pattern_survives_a_round_trip_with_its_numbers() {
        let mut encoder = Vp8Encoder::new(settings(640, 360, 600)).unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        let mut decoded = Vec::new();
        for n in 0..90 {
            let Some(encoded) = encoder.encode(&pattern::draw(640, 360, n), false).unwrap() else { continue };
            assert_eq!(encoded.keyframe, n == 0, "frame {n}");
            assert_eq!(is_keyframe(&encoded.data), encoded.keyframe);
            assert_eq!(keyframe_size(&encoded.data), encoded.keyframe.then_some((640, 360)));
            let picture = decoder.decode(&encoded.data).unwrap().expect("a picture per frame");
            assert_eq!((picture.width(), picture.height()), (640, 360));
            decoded.push((n, pattern::read_number(&picture)));
        }
        assert!(decoded.len() >= 80, "rate control dropped {} of 90", 90 - decoded.len());
        for (sent, read) in decoded {
            assert_eq!(read, Some(sent));
        }
    }

    #[test]
    fn keyframes_come_when_asked_and_bitrate_changes_live() {
        let mut encoder = Vp8Encoder::new(settings(320, 180, 300)).unwrap();
        let mut sizes = Vec::new();
        for n in 0..60 {
            let encoded = encoder.encode(&pattern::draw(320, 180, n), n == 30).unwrap();
            if let Some(encoded) = encoded {
                assert_eq!(encoded.keyframe, n == 0 || n == 30, "frame {n}");
                if n > 0 && n != 30 {
                    sizes.push(encoded.data.len());
                }
            }
        }
        let before: usize = sizes.iter().sum::<usize>() / sizes.len();
        encoder.set_bitrate(60).unwrap();
        assert_eq!(encoder.settings().bitrate_kbps, 60);
        let mut after = Vec::new();
        for n in 60..150 {
            if let Some(encoded) = encoder.encode(&pattern::draw(320, 180, n), false).unwrap() {
                after.push(encoded.data.len());
            }
        }
        let after_mean = after[after.len() / 2..].iter().sum::<usize>() / (after.len() - after.len() / 2);
        assert!(after_mean * 2 < before, "frames did not shrink: {before} -> {after_mean} bytes");
    }

    #[test]
    fn bad_sizes_and_garbage_are_errors() {
        assert!(matches!(Vp8Encoder::new(settings(641, 360, 300)), Err(VideoError::BadSize { .. })));
        let mut encoder = Vp8Encoder::new(settings(320, 180, 300)).unwrap();
        assert!(matches!(encoder.encode(&I420Frame::black(640, 360), false), Err(VideoError::BadSize { .. })));
        let mut decoder = Vp8Decoder::new().unwrap();
        assert!(decoder.decode(&[]).is_err());
        assert!(decoder.decode(&[0xff; 300]).is_err(), "garbage is not VP8");
        assert_eq!(keyframe_size(&[0u8; 300]), None, "no start code");
        assert_eq!(keyframe_size(&[0x50, 0, 0, 0x9d, 0x01, 0x2a, 0, 0]), None, "cut short");
        let encoded = encoder.encode(&pattern::draw(320, 180, 0), false).unwrap().unwrap();
        assert!(decoder.decode(&encoded.data).unwrap().is_some(), "a keyframe decodes after garbage");
    }
}
