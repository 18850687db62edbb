//! The raw audio format an AudioInfo describes, checked once, and the
//! AudioFrame a block of that audio becomes.

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

#[cfg(test)]
mod tests {
    use super::*;

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
