//! Optional playback on the robot's speaker through rodio. With no audio
//! device the node warns once and keeps publishing audio_out.

use rodio::cpal::traits::HostTrait;
use rodio::DeviceTrait;

pub struct Speaker {
    _stream: rodio::OutputStream,
    sink: rodio::Sink,
}

impl Speaker {
    /// Opens `device` (by name; `None` = the default). Err says why, for one warning.
    pub fn open(device: Option<&str>) -> Result<Self, String> {
        let mut stream = if let Some(device) = device {
            let host = rodio::cpal::default_host();
            let dev = host
                .output_devices()
                .map_err(|e| e.to_string())?
                .find(|d| d.name().is_ok_and(|n| n == device))
                .ok_or_else(|| format!("no output device named {device:?}"))?;
            rodio::OutputStreamBuilder::from_device(dev)
                .and_then(|b| b.open_stream())
                .map_err(|e| e.to_string())?
        } else {
            rodio::OutputStreamBuilder::open_default_stream().map_err(|e| e.to_string())?
        };
        stream.log_on_drop(false);
        let sink = rodio::Sink::connect_new(stream.mixer());
        Ok(Self {
            _stream: stream,
            sink,
        })
    }

    pub fn play(&self, samples: &[f32], rate: u32) {
        self.sink
            .append(rodio::buffer::SamplesBuffer::new(1, rate, samples.to_vec()));
    }

    /// Stops at once and forgets what was queued.
    pub fn stop(&self) {
        self.sink.clear();
        self.sink.play();
    }

    pub fn idle(&self) -> bool {
        self.sink.empty()
    }
}
