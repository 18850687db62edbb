//! espeak-ng through espeakng-sys: IPA phonemes for Piper, and espeak-ng's own
//! formant voice. espeak-ng keeps global state and is not thread-safe, so
//! every call goes through one process-wide lock.

use std::ffi::{c_int, c_short, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use espeakng_sys as sys;

#[derive(Debug, thiserror::Error)]
pub enum EspeakError {
    #[error("espeak-ng failed to initialize (is espeak-ng-data installed?)")]
    Init,
    #[error("espeak-ng has no voice {0:?}")]
    Voice(String),
    #[error("espeak-ng synthesis failed (code {0})")]
    Synth(i32),
}

struct Espeak {
    sample_rate: u32,
    voice: String,
}

static ESPEAK: OnceLock<Result<Mutex<Espeak>, ()>> = OnceLock::new();

/// State shared with the synthesis callback for one `synth` call.
struct Collect<'a> {
    samples: Vec<i16>,
    cancel: &'a AtomicBool,
}

unsafe extern "C" fn on_audio(
    wav: *mut c_short,
    n: c_int,
    events: *mut sys::espeak_EVENT,
) -> c_int {
    // SAFETY: espeak-ng passes the user_data given to espeak_Synth in every
    // event; it points at the `Collect` alive for the whole synchronous call.
    let collect = unsafe {
        if events.is_null() || (*events).user_data.is_null() {
            return 1;
        }
        &mut *((*events).user_data as *mut Collect)
    };
    if !wav.is_null() && n > 0 {
        // SAFETY: espeak-ng hands `n` valid samples at `wav`.
        let s = unsafe { std::slice::from_raw_parts(wav, n as usize) };
        collect.samples.extend_from_slice(s);
    }
    i32::from(collect.cancel.load(Ordering::Relaxed))
}

fn with<T>(
    voice: &str,
    f: impl FnOnce(&Espeak) -> Result<T, EspeakError>,
) -> Result<T, EspeakError> {
    let cell = ESPEAK.get_or_init(|| {
        // SAFETY: first and only initialization, synchronous mode, default data path.
        let rate = unsafe {
            sys::espeak_Initialize(
                sys::espeak_AUDIO_OUTPUT_AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                std::ptr::null(),
                sys::espeakINITIALIZE_DONT_EXIT as c_int,
            )
        };
        if rate <= 0 {
            return Err(());
        }
        // SAFETY: plain function pointer registration.
        unsafe { sys::espeak_SetSynthCallback(Some(on_audio)) };
        Ok(Mutex::new(Espeak {
            sample_rate: rate as u32,
            voice: String::new(),
        }))
    });
    let lock = cell.as_ref().map_err(|_| EspeakError::Init)?;
    let mut e = lock.lock().map_err(|_| EspeakError::Init)?;
    if e.voice != voice {
        let name = CString::new(voice).map_err(|_| EspeakError::Voice(voice.into()))?;
        // SAFETY: NUL-terminated name, under the lock.
        let rc = unsafe { sys::espeak_SetVoiceByName(name.as_ptr()) };
        if rc != sys::espeak_ERROR_EE_OK {
            return Err(EspeakError::Voice(voice.into()));
        }
        e.voice = voice.into();
    }
    f(&e)
}

/// Sample rate of espeak-ng's own voice output [Hz].
pub fn sample_rate(voice: &str) -> Result<u32, EspeakError> {
    with(voice, |e| Ok(e.sample_rate))
}

/// IPA phonemes of `text`, clause by clause (clauses joined by a space).
pub fn phonemize(voice: &str, text: &str) -> Result<Vec<String>, EspeakError> {
    let c = CString::new(text.replace('\0', " ")).map_err(|_| EspeakError::Synth(-1))?;
    with(voice, |_| {
        let mut out = Vec::new();
        let mut ptr = c.as_ptr() as *const c_void;
        while !ptr.is_null() {
            // SAFETY: `ptr` walks the NUL-terminated buffer `c`, which espeak
            // advances clause by clause and sets to NULL at the end.
            let ph = unsafe {
                sys::espeak_TextToPhonemes(
                    &mut ptr,
                    sys::espeakCHARS_UTF8 as c_int,
                    sys::espeakPHONEMES_IPA as c_int,
                )
            };
            if ph.is_null() {
                break;
            }
            // SAFETY: espeak returns a NUL-terminated string valid until the next call.
            let s = unsafe { CStr::from_ptr(ph) }
                .to_string_lossy()
                .trim()
                .to_string();
            if !s.is_empty() {
                out.push(s);
            }
        }
        Ok(out)
    })
}

/// espeak-ng's formant voice: 16-bit samples at [`sample_rate`].
/// `rate_wpm` is the speaking rate; `cancel` stops synthesis early.
pub fn synth(
    voice: &str,
    text: &str,
    rate_wpm: u32,
    cancel: &AtomicBool,
) -> Result<Vec<i16>, EspeakError> {
    let c = CString::new(text.replace('\0', " ")).map_err(|_| EspeakError::Synth(-1))?;
    with(voice, |_| {
        let mut collect = Collect {
            samples: Vec::new(),
            cancel,
        };
        // SAFETY: under the lock; synchronous mode, so `collect` outlives the call.
        let rc = unsafe {
            sys::espeak_SetParameter(sys::espeak_PARAMETER_espeakRATE, rate_wpm as c_int, 0);
            sys::espeak_Synth(
                c.as_ptr() as *const c_void,
                c.as_bytes_with_nul().len(),
                0,
                sys::espeak_POSITION_TYPE_POS_CHARACTER,
                0,
                sys::espeakCHARS_UTF8,
                std::ptr::null_mut(),
                &mut collect as *mut Collect as *mut c_void,
            )
        };
        if rc != sys::espeak_ERROR_EE_OK && !cancel.load(Ordering::Relaxed) {
            return Err(EspeakError::Synth(rc));
        }
        Ok(collect.samples)
    })
}
