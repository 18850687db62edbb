//! audio_bridge: voice_agent and the ROS audio drivers robots already run
//! (ros-drivers audio_common).
//!
//! - in: `audio_stamped` (audio_common_msgs/AudioDataStamped, raw "wave"
//!   audio as audio_capture publishes it with `format: wave`) with the format
//!   from `audio_info` (AudioInfo, latched) -> `audio` (voice_agent
//!   AudioFrame), stamps passed through;
//! - out: `audio_out` (tts_node's speech) -> `audio_out_data`
//!   (audio_common_msgs/AudioData, S16LE mono at `output_sample_rate`, what
//!   audio_play plays with `format: wave`) and its AudioInfo on
//!   `audio_out_info` (latched).
//!
//! audio_capture also publishes plain AudioData on `audio`: remap that away
//! (`-r audio:=audio_capture/audio`), voice_agent's `audio` is AudioFrame.
//! Built with the bridge when audio_common_msgs is in the ROS prefix
//! (`cfg(audio_common)`); otherwise the executable says so and exits.

mod format;

use std::process::ExitCode;

use r2r::RosParams;
use voice_core::params::{check, in_range, ParamError};
use voice_ros::node;
use voice_ros::params::NodeParams;

const NODE_NAME: &str = "audio_bridge";

/// Parameters of audio_bridge. Doc comments are what `ros2 param describe` shows.
#[derive(RosParams, Debug, Clone)]
pub struct BridgeParams {
    /// Bridge audio_common capture (audio_stamped + audio_info) to `audio`.
    pub input: bool,
    /// Bridge `audio_out` to audio_common AudioData (audio_out_data + audio_out_info).
    pub output: bool,
    /// Sample rate of audio_out_data [Hz] (audio_play's `sample_rate` must match).
    pub output_sample_rate: i32,
    /// frame_id for bridged capture whose header has none.
    pub frame_id: String,
}

impl Default for BridgeParams {
    fn default() -> Self {
        Self {
            input: true,
            output: true,
            output_sample_rate: 16_000,
            frame_id: "microphone".into(),
        }
    }
}

/// audio_bridge's validated settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub input: bool,
    pub output: bool,
    pub output_sample_rate: u32,
    pub frame_id: String,
}

impl NodeParams for BridgeParams {
    type Config = BridgeConfig;
    const READ_ONLY: &'static [&'static str] =
        &["input", "output", "output_sample_rate", "frame_id"];

    fn validate(&self) -> Result<BridgeConfig, ParamError> {
        in_range(
            self.output_sample_rate,
            8_000..=48_000,
            "output_sample_rate",
        )?;
        check(self.input || self.output, "input", || {
            "input and output are both off: nothing to bridge".into()
        })?;
        Ok(BridgeConfig {
            input: self.input,
            output: self.output,
            output_sample_rate: self.output_sample_rate as u32,
            frame_id: self.frame_id.clone(),
        })
    }
}

fn main() -> ExitCode {
    node::main::<BridgeParams, _, _>(NODE_NAME, &[], run)
}

#[cfg(not(audio_common))]
async fn run() -> anyhow::Result<()> {
    anyhow::bail!(
        "audio_bridge was built without audio_common_msgs: install it \
         (ros-<distro>-audio-common-msgs) and rebuild voice_agent"
    )
}

#[cfg(audio_common)]
async fn run() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use r2r::audio_common_msgs::msg::{AudioData, AudioDataStamped, AudioInfo};
    use r2r::voice_agent::msg::AudioFrame;
    use voice_core::audio::encode_s16le;
    use voice_ros::diag::Report;

    let (mut node, log, params) = node::start::<BridgeParams>(NODE_NAME)?;
    let p = (*params.config).clone();
    let bridged_in = Arc::new(AtomicU64::new(0));
    let bridged_out = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = node::Tasks::new(&log);
    let fq = node::fq_name(&node);
    let mut held_in = None;

    if p.input {
        let data = tasks.subscribe::<AudioDataStamped>(
            &mut node,
            "audio_stamped",
            node::audio_qos(true, 50),
        )?;
        let infos = tasks.subscribe::<AudioInfo>(&mut node, "audio_info", node::state_qos())?;
        let out = node.create_publisher::<AudioFrame>("audio", node::audio_qos(true, 50))?;
        // publishes one bridged frame (or counts and warns why it was refused)
        let bridge = {
            let (n, bad, log) = (bridged_in.clone(), refused.clone(), log.clone());
            let mut throttle = voice_ros::log::Throttle::new(Duration::from_secs(5));
            move |frame: Result<AudioFrame, String>| match frame {
                Ok(frame) => {
                    if out.publish(&frame).is_ok() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    bad.fetch_add(1, Ordering::Relaxed);
                    if let Some(more) = throttle.ready() {
                        log.warn(format!("audio_stamped frame dropped: {e} ({more} more)"));
                    }
                }
            }
        };
        // the format, the frames held until it is known, and the publisher:
        // one lock, so held frames go out before any newer one
        let input = Arc::new(Mutex::new((format::Input::default(), bridge)));
        {
            let (input, log, frame_id) = (input.clone(), log.clone(), p.frame_id.clone());
            tasks.each("audio_info", infos, move |i| {
                let f = format::Format::from_info(
                    i.channels,
                    i.sample_rate,
                    &i.sample_format,
                    &i.coding_format,
                );
                match &f {
                    Ok(f) => log.info(format!("audio_info: {f}")),
                    Err(e) => log.error(format!("audio_info refused: {e}")),
                }
                if let Ok(mut guard) = input.lock() {
                    let (input, bridge) = &mut *guard;
                    let held = input.info(f, &frame_id);
                    if !held.is_empty() {
                        log.info(format!(
                            "{} frame(s) that came before audio_info bridged",
                            held.len()
                        ));
                    }
                    held.into_iter().for_each(bridge);
                }
            });
        }
        let (frame_id, early) = (p.frame_id.clone(), input.clone());
        tasks.each("audio_stamped", data, move |m: AudioDataStamped| {
            if let Ok(mut guard) = input.lock() {
                let (input, bridge) = &mut *guard;
                if let Some(frame) = input.data(m.audio.data, m.header, &frame_id) {
                    bridge(frame);
                }
            }
        });
        held_in = Some(early);
    }
    if p.output {
        let audio_out =
            tasks.subscribe::<AudioFrame>(&mut node, "audio_out", node::audio_qos(true, 200))?;
        let data_pub =
            node.create_publisher::<AudioData>("audio_out_data", node::audio_qos(true, 200))?;
        let info_pub = node.create_publisher::<AudioInfo>("audio_out_info", node::state_qos())?;
        let rate = p.output_sample_rate;
        info_pub.publish(&AudioInfo {
            channels: 1,
            sample_rate: rate,
            sample_format: "S16LE".into(),
            bitrate: rate * 16,
            coding_format: "wave".into(),
        })?;
        let (n, bad) = (bridged_out.clone(), refused.clone());
        tasks.task(
            "audio_out",
            voice_ros::frames::resample_stream(
                audio_out,
                rate,
                voice_ros::frames::IDLE_FLUSH,
                format::MAX_FRAME_S,
                move |x| {
                    if data_pub
                        .publish(&AudioData {
                            data: encode_s16le(&x),
                        })
                        .is_ok()
                    {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                },
                move |_| {
                    bad.fetch_add(1, Ordering::Relaxed);
                },
            ),
        );
    }
    tasks.diagnostics(&mut node, move || {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (held, held_dropped, waiting) = held_in
            .as_ref()
            .and_then(|i| {
                i.lock()
                    .ok()
                    .map(|g| (g.0.held, g.0.held_dropped, g.0.waiting()))
            })
            .unwrap_or_default();
        Report::new(&fq, "audio_common")
            .kv("frames_in", n(&bridged_in))
            .kv("frames_out", n(&bridged_out))
            .kv("frames_refused", n(&refused))
            .kv("frames_held_before_info", held)
            .kv("frames_dropped_before_info", held_dropped)
            .kv("frames_waiting_for_info", waiting)
            .into_array()
    })?;
    let ready = format!(
        "ready: input {} (audio_stamped + audio_info -> audio), output {} (audio_out -> audio_out_data at {} Hz)",
        p.input, p.output, p.output_sample_rate
    );
    tasks.spin(node, &ready, || {})
}
