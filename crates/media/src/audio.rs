//! Audio in and out of a session: a source of 8 kHz mono PCM frames (a WAV file of any
//! format, a tone, silence) and a WAV sink (8 kHz mono 16-bit, via `hound`).

use crate::MediaError;
use crate::codec::PCM_RATE;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// What a session sends.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioSource {
    /// A WAV file, played once: any sample rate, channel count and sample format; channels
    /// are averaged and the rate converted to 8 kHz by linear interpolation.
    Wav(PathBuf),
    /// Silence, forever.
    Silence,
    /// A sine tone at this frequency, forever.
    Tone {
        /// Frequency in Hz.
        hz: f32,
    },
}

/// Reads a WAV file as 8 kHz mono 16-bit samples.
pub fn read_wav_8k_mono(path: &Path) -> Result<Vec<i16>, MediaError> {
    let mut reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| s as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    let mono: Vec<f32> = interleaved
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
        .collect();
    Ok(resample_linear(&mono, spec.sample_rate, PCM_RATE)
        .into_iter()
        .map(|s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// Linear-interpolation rate conversion (no anti-alias filter: voice files are what this
/// is for, and G.711 band-limits anyway).
pub fn resample_linear(input: &[f32], from_rate: u32, to_rate: u32) -> Vec<f32> {
    if from_rate == to_rate || from_rate == 0 || input.is_empty() {
        return input.to_vec();
    }
    let out_len = (input.len() as u64 * u64::from(to_rate) / u64::from(from_rate)) as usize;
    let step = f64::from(from_rate) / f64::from(to_rate);
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * step;
            let index = pos as usize;
            let frac = (pos - index as f64) as f32;
            let a = input[index.min(input.len() - 1)];
            let b = input[(index + 1).min(input.len() - 1)];
            a + (b - a) * frac
        })
        .collect()
}

/// A source opened for playing: hands out frames of 8 kHz PCM.
#[derive(Debug)]
pub enum SourceReader {
    /// Samples in memory (a WAV file read whole), played once.
    Samples {
        /// The samples.
        samples: Vec<i16>,
        /// How many were handed out.
        position: usize,
    },
    /// Silence, forever.
    Silence,
    /// A sine tone, forever.
    Tone {
        /// Current phase, radians.
        phase: f64,
        /// Phase step per sample.
        step: f64,
    },
}

impl SourceReader {
    /// Opens `source`, reading a WAV file whole.
    pub fn open(source: &AudioSource) -> Result<SourceReader, MediaError> {
        Ok(match source {
            AudioSource::Wav(path) => SourceReader::Samples {
                samples: read_wav_8k_mono(path)?,
                position: 0,
            },
            AudioSource::Silence => SourceReader::Silence,
            AudioSource::Tone { hz } => SourceReader::Tone {
                phase: 0.0,
                step: std::f64::consts::TAU * f64::from(*hz) / f64::from(PCM_RATE),
            },
        })
    }

    /// The next `n` samples; the last frame of a file is padded with silence; `None` once
    /// the file is over.
    pub fn next_frame(&mut self, n: usize) -> Option<Vec<i16>> {
        match self {
            SourceReader::Samples { samples, position } => {
                if *position >= samples.len() {
                    return None;
                }
                let end = (*position + n).min(samples.len());
                let mut frame = samples[*position..end].to_vec();
                frame.resize(n, 0);
                *position = end;
                Some(frame)
            }
            SourceReader::Silence => Some(vec![0; n]),
            SourceReader::Tone { phase, step } => Some(
                (0..n)
                    .map(|_| {
                        let s = (phase.sin() * 16000.0) as i16;
                        *phase = (*phase + *step) % std::f64::consts::TAU;
                        s
                    })
                    .collect(),
            ),
        }
    }
}

/// Where a session records what it receives: a WAV file, 8 kHz mono 16-bit.
pub struct AudioSink {
    writer: hound::WavWriter<BufWriter<File>>,
    path: PathBuf,
    samples: u64,
}

impl std::fmt::Debug for AudioSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSink")
            .field("path", &self.path)
            .field("samples", &self.samples)
            .finish()
    }
}

impl AudioSink {
    /// Creates (or truncates) the WAV file at `path`.
    pub fn wav(path: impl AsRef<Path>) -> Result<AudioSink, MediaError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: PCM_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Ok(AudioSink {
            writer: hound::WavWriter::create(path.as_ref(), spec)?,
            path: path.as_ref().to_path_buf(),
            samples: 0,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Samples written so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Appends samples.
    pub fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        let mut writer = self.writer.get_i16_writer(pcm.len() as u32);
        for &s in pcm {
            writer.write_sample(s);
        }
        writer.flush()?;
        self.samples += pcm.len() as u64;
        Ok(())
    }

    /// Writes the header with the final length and closes the file.
    pub fn finalize(self) -> Result<(), MediaError> {
        self.writer.finalize()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("media-audio-{}-{name}", std::process::id()))
    }

    #[test]
    fn stereo_44k1_float_becomes_8k_mono() {
        let path = temp("stereo.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44100,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        // One second: left 0.5, right 0.0 -> mono 0.25.
        for _ in 0..44100 {
            w.write_sample(0.5f32).unwrap();
            w.write_sample(0.0f32).unwrap();
        }
        w.finalize().unwrap();
        let pcm = read_wav_8k_mono(&path).unwrap();
        assert_eq!(pcm.len(), 8000);
        assert!(
            pcm.iter().all(|&s| (s - 8192).abs() <= 1),
            "{:?}",
            &pcm[..4]
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn sink_writes_a_readable_8k_file_and_source_pads_the_last_frame() {
        let path = temp("sink.wav");
        let mut sink = AudioSink::wav(&path).unwrap();
        let pcm: Vec<i16> = (0..250).map(|i| i * 10).collect();
        sink.write(&pcm).unwrap();
        assert_eq!(sink.samples(), 250);
        sink.finalize().unwrap();
        let mut source = SourceReader::open(&AudioSource::Wav(path.clone())).unwrap();
        assert_eq!(source.next_frame(160).unwrap(), pcm[..160]);
        let last = source.next_frame(160).unwrap();
        assert_eq!(&last[..90], &pcm[160..]);
        assert!(last[90..].iter().all(|&s| s == 0));
        assert_eq!(source.next_frame(160), None);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_missing_or_broken_file_is_an_error() {
        assert!(SourceReader::open(&AudioSource::Wav(temp("absent.wav"))).is_err());
        let path = temp("broken.wav");
        std::fs::write(&path, b"RIFF....WAVEnope").unwrap();
        assert!(read_wav_8k_mono(&path).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn tone_has_its_frequency() {
        let mut tone = SourceReader::open(&AudioSource::Tone { hz: 1000.0 }).unwrap();
        let frame = tone.next_frame(8000).unwrap();
        // 1 kHz at 8 kHz: 2000 zero crossings per second (give or take one).
        let crossings = frame
            .windows(2)
            .filter(|w| (w[0] >= 0) != (w[1] >= 0))
            .count();
        assert!((1998..=2001).contains(&crossings), "{crossings}");
    }
}
