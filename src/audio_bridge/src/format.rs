//! The raw audio format an AudioInfo describes, checked once, and the
//! AudioFrame a block of that audio becomes.

use std::collections::VecDeque;
use std::fmt;

use r2r::std_msgs::msg::Header;
use r2r::voice_agent::msg::AudioFrame;

/// Longest bridged frame accepted [s].
pub const MAX_FRAME_S: f64 = 2.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub channels: u16,
    pub sample_rate: u32,
    /// AudioFrame encoding: "S16LE" or "F32LE".
    pub encoding: &'static str,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} Hz, {} channel(s), {}",
            self.sample_rate, self.channels, self.encoding
        )
    }
}

impl Format {
    /// From AudioInfo's fields: raw ("wave") S16LE or F32LE only; an
    /// encoded stream (audio_capture's default, mp3) is refused with the fix.
    pub fn from_info(
        channels: u8,
        sample_rate: u32,
        sample_format: &str,
        coding_format: &str,
    ) -> Result<Self, String> {
        let coding = coding_format.trim().to_ascii_lowercase();
        if !coding.is_empty() && coding != "wave" && coding != "raw" {
            return Err(format!(
                "coding_format {coding_format:?}: only raw audio is bridged; run audio_capture with format: wave"
            ));
        }
        let encoding = match sample_format.trim().to_ascii_uppercase().as_str() {
            "S16LE" => "S16LE",
            "F32LE" => "F32LE",
            other => {
                return Err(format!(
                    "sample_format {other:?}: S16LE or F32LE are bridged"
                ))
            }
        };
        if channels == 0 {
            return Err("channels 0".into());
        }
        Ok(Self {
            channels: u16::from(channels),
            sample_rate,
            encoding,
        })
    }

    /// The AudioFrame for one AudioData block of this format, validated as
    /// stt_node validates frames (rate, whole samples, length).
    pub fn frame(
        &self,
        data: Vec<u8>,
        mut header: Header,
        frame_id: &str,
    ) -> Result<AudioFrame, String> {
        voice_core::audio::decode_frame(
            self.sample_rate,
            self.channels,
            self.encoding,
            &data,
            MAX_FRAME_S,
        )
        .map_err(|e| e.to_string())?;
        if header.frame_id.is_empty() {
            header.frame_id = frame_id.into();
        }
        if voice_ros::stamp::is_zero(&header.stamp) {
            header.stamp = voice_ros::stamp::now();
        }
        Ok(AudioFrame {
            header,
            sample_rate: self.sample_rate,
            channels: self.channels,
            encoding: self.encoding.into(),
            data,
            turn_id: String::new(),
        })
    }
}

/// Capture frames held until the first AudioInfo (at audio_capture's 100 ms
/// buffers: 10 s; at 20 ms frames: 2 s).
pub const EARLY_FRAMES: usize = 100;

/// The capture side of the bridge: the format from `audio_info`, and the
/// frames of `audio_stamped` that came before it. audio_capture latches its
/// AudioInfo, but a subscriber can match the data topic first: those frames
/// are held (bounded, oldest dropped and counted) and bridged, in order,
/// once the format is known, instead of being refused.
#[derive(Default)]
pub struct Input {
    format: Option<Result<Format, String>>,
    early: VecDeque<(Vec<u8>, Header)>,
    /// Frames held before the first AudioInfo, in all.
    pub held: u64,
    /// Of those, dropped because more than [`EARLY_FRAMES`] waited.
    pub held_dropped: u64,
}

impl Input {
    /// A new AudioInfo; returns the held frames as they bridge now.
    pub fn info(
        &mut self,
        format: Result<Format, String>,
        frame_id: &str,
    ) -> Vec<Result<AudioFrame, String>> {
        self.format = Some(format);
        let early: Vec<_> = self.early.drain(..).collect();
        early
            .into_iter()
            .filter_map(|(data, header)| self.data(data, header, frame_id))
            .collect()
    }

    /// A capture frame: what it bridges to, or `None` while it is held
    /// (no AudioInfo yet).
    pub fn data(
        &mut self,
        data: Vec<u8>,
        header: Header,
        frame_id: &str,
    ) -> Option<Result<AudioFrame, String>> {
        match &self.format {
            Some(Ok(f)) => Some(f.frame(data, header, frame_id)),
            Some(Err(e)) => Some(Err(e.clone())),
            None => {
                if self.early.len() >= EARLY_FRAMES {
                    self.early.pop_front();
                    self.held_dropped += 1;
                }
                self.early.push_back((data, header));
                self.held += 1;
                None
            }
        }
    }

    /// Frames waiting for the first AudioInfo.
    pub fn waiting(&self) -> usize {
        self.early.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(sec: i32) -> Header {
        let mut h = Header::default();
        h.stamp.sec = sec;
        h
    }

    #[test]
    fn frames_before_the_first_info_are_held_and_bridged_in_order() {
        let mut input = Input::default();
        for k in 1..=3 {
            assert!(input.data(vec![0; 640], stamped(k), "mic").is_none());
        }
        let f = Format::from_info(1, 16_000, "S16LE", "wave");
        let out = input.info(f, "mic");
        let secs: Vec<i32> = out
            .iter()
            .map(|r| r.as_ref().unwrap().header.stamp.sec)
            .collect();
        assert_eq!(secs, [1, 2, 3]);
        assert_eq!((input.held, input.held_dropped, input.waiting()), (3, 0, 0));
        assert!(input.data(vec![0; 640], stamped(4), "mic").unwrap().is_ok());
    }

    #[test]
    fn held_frames_are_bounded_and_an_encoded_stream_refuses_them() {
        let mut input = Input::default();
        for k in 0..(EARLY_FRAMES as i32 + 5) {
            input.data(vec![0; 640], stamped(k), "mic");
        }
        assert_eq!((input.waiting(), input.held_dropped), (EARLY_FRAMES, 5));
        let out = input.info(Format::from_info(1, 16_000, "S16LE", "mp3"), "mic");
        assert_eq!(out.len(), EARLY_FRAMES);
        assert!(out
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.contains("format: wave"))));
    }

    #[test]
    fn raw_formats_pass_encoded_ones_are_refused_with_the_fix() {
        let f = Format::from_info(2, 48_000, "s16le", "wave").unwrap();
        assert_eq!(
            (f.channels, f.sample_rate, f.encoding),
            (2, 48_000, "S16LE")
        );
        assert!(Format::from_info(1, 16_000, "S16LE", "mp3")
            .unwrap_err()
            .contains("format: wave"));
        assert!(Format::from_info(1, 16_000, "S24LE", "wave").is_err());
        assert!(Format::from_info(0, 16_000, "S16LE", "wave").is_err());
    }

    #[test]
    fn frames_are_validated_and_keep_their_stamp() {
        let f = Format::from_info(1, 16_000, "S16LE", "wave").unwrap();
        let mut h = Header::default();
        h.stamp.sec = 7;
        let m = f.frame(vec![0; 640], h, "mic").unwrap();
        assert_eq!((m.header.stamp.sec, m.header.frame_id.as_str()), (7, "mic"));
        assert!(f.frame(vec![0; 3], Header::default(), "mic").is_err());
    }
}
