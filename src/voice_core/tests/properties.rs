//! Property tests (proptest) of every function that reads outside data:
//! whatever arrives, nothing panics and the invariants hold. The case count
//! per property is PROPTEST_CASES (default 256; scripts/fuzz.sh raises it).

use proptest::prelude::*;
use voice_core::audio::{decode_frame, Encoding};
use voice_core::chat::{sanitize, History, Message};
use voice_core::chunker::{Chunker, ChunkerConfig};
use voice_core::endpoint::{EndpointConfig, Event, Segmenter, WINDOW};
use voice_core::intent::{self, SayStream};
use voice_core::normalize::normalize;
use voice_core::places::Places;
use voice_core::resample::StreamResampler;
use voice_core::robot_state::Battery;
use voice_core::transcript::{clean, word_error_rate};
use voice_core::utf8::Utf8Stream;

fn encodings() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("S16LE".to_string()),
        Just("F32LE".to_string()),
        Just("f32le".to_string()),
        ".{0,12}",
    ]
}

proptest! {
    #[test]
    fn decode_frame_never_panics_and_output_is_sane(
        rate in prop_oneof![Just(0u32), 1u32..200_000, Just(16_000), Just(44_100)],
        channels in 0u16..40,
        enc in encodings(),
        data in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        if let Ok(f) = decode_frame(rate, channels, &enc, &data, 5.0) {
            let e = Encoding::parse(&enc).unwrap();
            prop_assert_eq!(f.samples.len(), data.len() / (e.bytes_per_sample() * usize::from(channels)));
            prop_assert!(f.samples.iter().all(|s| s.is_finite() && (-1.0..=1.0).contains(s)));
        }
    }

    #[test]
    fn resampler_handles_any_block_sizes(
        rate in prop_oneof![Just(8_000u32), Just(11_025), Just(22_050), Just(44_100), Just(48_000), Just(16_000)],
        blocks in proptest::collection::vec(0usize..3000, 1..20),
    ) {
        let mut r = StreamResampler::new(16_000);
        let mut n_in = 0usize;
        let mut n_out = 0usize;
        for b in blocks {
            n_in += b;
            n_out += r.push(rate, &vec![0.1; b]).unwrap().len();
        }
        n_out += r.flush().unwrap().len();
        let expected = n_in as f64 * 16_000.0 / f64::from(rate);
        prop_assert!((n_out as f64 - expected).abs() <= expected * 0.05 + 2_000.0, "{} vs {}", n_out, expected);
    }

    #[test]
    fn segmenter_bounds_hold_for_any_probabilities(
        probs in proptest::collection::vec(prop_oneof![0.0f32..1.0, Just(f32::NAN), Just(1.0)], 0..2000),
        max_s in 1.0f32..5.0,
    ) {
        let cfg = EndpointConfig { max_utterance_s: max_s, ..EndpointConfig::default() };
        let mut seg = Segmenter::new(cfg.clone());
        let audio = vec![0.0f32; probs.len() * WINDOW];
        let mut total = 0usize;
        for ev in seg.push(&audio, &probs) {
            if let Event::Segment(s) = ev {
                let max = (max_s * 16_000.0) as usize + WINDOW + (cfg.speech_pad_ms as usize * 16);
                prop_assert!(s.audio.len() <= max, "{} > {}", s.audio.len(), max);
                prop_assert!(s.speech_end <= s.start + s.audio.len() as u64);
                prop_assert!(s.speech_end >= s.start || s.is_last, "a cut piece must hold speech");
                total += s.audio.len();
            }
        }
        prop_assert!(total <= audio.len());
    }

    #[test]
    fn chunks_concatenate_to_the_input(text in "\\PC{0,400}", cuts in proptest::collection::vec(1usize..20, 1..60)) {
        let mut c = Chunker::new(ChunkerConfig::default());
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        for n in cuts.iter().cycle() {
            if i >= chars.len() { break; }
            let piece: String = chars[i..(i + n).min(chars.len())].iter().collect();
            i += n;
            for chunk in c.push(&piece) {
                prop_assert!(!chunk.is_empty());
                out.push_str(&chunk);
            }
        }
        out.push_str(&c.finish());
        prop_assert_eq!(out, text);
    }

    #[test]
    fn normalize_never_panics_and_drops_controls(text in "\\PC{0,200}|[0-9.,:%° a-z/-]{0,60}") {
        let n = normalize(&text);
        prop_assert!(!n.chars().any(char::is_control));
    }

    #[test]
    fn prompt_fitting_respects_the_budget(
        turns in proptest::collection::vec(("\\PC{0,80}", "\\PC{0,80}"), 0..10),
        user in "\\PC{0,500}",
        budget in 0usize..400,
    ) {
        let mut h = History::new(8);
        for (u, a) in turns { h.push(sanitize(&u), sanitize(&a)); }
        let count = |m: &[Message]| m.iter().map(|x| 4 + x.content.chars().count() / 3).sum::<usize>();
        if let Some(f) = h.fit("You are a robot.", &sanitize(&user), budget, count) {
            prop_assert!(count(&f.messages) <= budget);
        }
    }

    #[test]
    fn utf8_stream_reassembles_valid_text(text in "\\PC{0,100}", cut in 1usize..7) {
        let mut d = Utf8Stream::new();
        let mut out = String::new();
        for b in text.as_bytes().chunks(cut) { out.push_str(&d.push(b)); }
        out.push_str(&d.finish());
        prop_assert_eq!(out, text);
    }

    #[test]
    fn utf8_stream_survives_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 1usize..7) {
        let mut d = Utf8Stream::new();
        for b in bytes.chunks(cut) { let _ = d.push(b); }
        let _ = d.finish();
    }

    #[test]
    fn transcript_cleaning_and_wer_never_panic(a in "\\PC{0,200}", b in "\\PC{0,200}") {
        let _ = clean(&a);
        let w = word_error_rate(&a, &b);
        prop_assert!(w >= 0.0 && w.is_finite());
    }

    #[test]
    fn endpoint_config_validation_never_panics(t in any::<f32>(), s in any::<u32>(), m in any::<f32>()) {
        let _ = EndpointConfig { threshold: t, min_silence_ms: s, max_utterance_s: m, ..EndpointConfig::default() }.validate();
    }

    #[test]
    fn say_stream_yields_the_say_text_however_it_is_cut(
        say in "[^\"\\\\\\x00-\\x1f]{0,80}",
        cuts in proptest::collection::vec(1usize..12, 1..40),
    ) {
        let out = format!("{}{say}\"}}", intent::ANSWER_PREFIX);
        let chars: Vec<char> = out.chars().collect();
        let mut s = SayStream::new();
        let (mut got, mut at) = (String::new(), 0);
        for c in cuts.iter().cycle() {
            if at >= chars.len() { break; }
            let end = (at + c).min(chars.len());
            got += &s.push(&chars[at..end].iter().collect::<String>());
            at = end;
        }
        prop_assert_eq!(&got, &say);
        prop_assert_eq!(intent::parse(&out).unwrap(), intent::Action::Answer { say });
    }

    #[test]
    fn intent_parsing_and_streaming_never_panic(text in "\\PC{0,200}", cut in 1usize..9) {
        let _ = intent::parse(&text);
        let chars: Vec<char> = text.chars().collect();
        let mut s = SayStream::new();
        for piece in chars.chunks(cut) {
            let _ = s.push(&piece.iter().collect::<String>());
        }
        prop_assert_eq!(s.raw(), text.as_str());
        if !s.said().is_empty() {
            prop_assert!(text.starts_with(intent::ANSWER_PREFIX));
            prop_assert!(!s.said().contains('"'));
        }
    }

    #[test]
    fn places_files_never_panic_and_resolve_only_known_names(
        yaml in "\\PC{0,300}",
        said in "\\PC{0,40}",
        x in any::<f64>(), y in any::<f64>(),
    ) {
        let _ = Places::parse(&yaml, "fuzz.yaml");
        let p = Places::parse("places:\n  - name: kitchen\n    x: 1\n    y: 2\n", "t").unwrap();
        if let Some(found) = p.resolve(&said) {
            prop_assert_eq!(&found.name, "kitchen");
            prop_assert!(said.to_lowercase().contains("kitchen"));
        }
        let _ = p.nearest("map", x, y);
    }

    #[test]
    fn battery_readings_never_panic(pct in any::<f32>(), v in any::<f32>(), status in any::<u8>()) {
        let b = Battery::from_msg(pct, v, status);
        prop_assert!(b.fraction.is_none_or(|f| (0.0..=1.0).contains(&f)));
        let _ = b.describe();
    }
}
