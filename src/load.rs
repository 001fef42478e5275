//! One way to load a model, for the command line, the benchmark and a server alike: map the
//! text model file and the mmproj, interleave and page in the weights, load the text model,
//! tokenizer and vision encoder, check that the two files belong together, and choose the chat
//! template.
//!
//! The models borrow their weights from the mapped files, so the files are held by an owner,
//! [`ModelFiles`], and a [`Pipeline`] is built from a borrow of it:
//!
//! ```no_run
//! use llava_edge::load::{LoadOptions, ModelFiles};
//! use llava_edge::threadpool::ThreadPool;
//!
//! let opts = LoadOptions::new("model.gguf".into());
//! let pool = ThreadPool::new(llava_edge::load::default_threads());
//! let files = ModelFiles::open(&opts, &pool)?;
//! let loaded = files.pipeline(&opts, pool)?;
//! for w in &loaded.warnings {
//!     eprintln!("warning: {w}");
//! }
//! # Ok::<(), llava_edge::load::LoadError>(())
//! ```
//!
//! A [`Pipeline`] answers requests through `&self`, so one loaded model can serve several
//! threads by reference (`std::thread::scope`, or a `ModelFiles` leaked once for a process that
//! serves until it exits). Their parallel sections take turns on the one thread pool.

use std::path::{Path, PathBuf};

use crate::chat::{ChatTemplate, SpecialTokens};
use crate::gguf::GgufFile;
use crate::pipeline::Pipeline;
use crate::text::{Arch, KvType, TextError, TextModel};
use crate::threadpool::ThreadPool;
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::vision::{VisionEncoder, VisionError};

/// What to load and how.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The text model GGUF.
    pub model: PathBuf,
    /// The vision projector GGUF (mmproj), for images and video.
    pub mmproj: Option<PathBuf>,
    /// Interleave the weights that have a decode layout (Q4_0 .. Q8_0, Q4_K .. Q6_K) at load:
    /// faster decode, at the cost of load time and private copies of those pages.
    pub repack: bool,
    /// Run the vision encoder's F16 products in bfloat16 pairs where the CPU has a bfloat16
    /// dot instruction.
    pub vision_bf16: bool,
    /// Pad images to a square with the mean colour instead of centre-cropping.
    pub pad_square: bool,
    /// A chat template in place of the model file's own: a built-in's name
    /// ([`ChatTemplate::ALL`]) or the path of a Jinja template file.
    pub chat_template: Option<String>,
    /// Where the text layers run; None: a GPU where one is present (a Vulkan device that is
    /// not the CPU itself), else the CPU.
    pub device: Option<Device>,
    /// Text layers on the GPU (llama.cpp's `n_gpu_layers`: the last ones; the rest run on the
    /// CPU); at least the layer count puts the output norm and matrix there too. None: all.
    pub gpu_layers: Option<usize>,
    /// The most bytes of device memory the weights and caches may take (None: the device's
    /// own); what does not fit runs on the CPU.
    pub device_memory: Option<u64>,
    /// Which Vulkan device, in the loader's order (`vulkan::Vulkan::devices`), when the device
    /// is Vulkan; None: the best (a discrete GPU first).
    pub vulkan_index: Option<usize>,
}

/// A device the text layers can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// This machine's CPU, through the C kernels.
    Cpu,
    /// A Vulkan device (any GPU with a Vulkan driver; Mesa's lavapipe is one on the CPU).
    Vulkan,
    /// An NVIDIA GPU through CUDA (not offloading yet).
    Cuda,
}

impl Device {
    /// Every device's name, for messages.
    pub const NAMES: &'static str = "cpu, vulkan, cuda";

    /// The device named `name`: `cpu`, `vulkan` or `cuda`.
    pub fn from_name(name: &str) -> Result<Device, LoadError> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "vulkan" => Ok(Device::Vulkan),
            "cuda" => Ok(Device::Cuda),
            other => Err(LoadError::UnknownDevice(other.to_string())),
        }
    }
}

impl LoadOptions {
    /// The defaults for `model`: weights interleaved, exact F16 vision products, centre-cropped
    /// images, the file's own chat template, no mmproj.
    pub fn new(model: PathBuf) -> LoadOptions {
        LoadOptions {
            model,
            mmproj: None,
            repack: true,
            vision_bf16: false,
            pad_square: false,
            chat_template: None,
            device: None,
            gpu_layers: None,
            device_memory: None,
            vulkan_index: None,
        }
    }
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The text model file could not be opened or loaded.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The mmproj file could not be opened or loaded, or does not fit the text model.
    #[error(transparent)]
    Vision(#[from] VisionError),
    /// The text model file's tokenizer could not be loaded.
    #[error("{path}: {source}")]
    Tokenizer {
        /// The text model file.
        path: PathBuf,
        /// What is wrong with its tokenizer.
        source: TokenizerError,
    },
    /// The chat template asked for is neither a built-in nor a file.
    #[error("unknown chat template '{name}': one of {known}, or a Jinja template file")]
    UnknownTemplate {
        /// The name asked for.
        name: String,
        /// The built-ins' names.
        known: String,
    },
    /// The chat template file asked for cannot be read or used.
    #[error("{path}: {problem}")]
    TemplateFile {
        /// The template file.
        path: PathBuf,
        /// Why it cannot be used.
        problem: String,
    },
    /// A KV cache type that does not exist.
    #[error("unknown cache type '{0}' (f16 or f32)")]
    UnknownCacheType(String),
    /// A device name that does not exist.
    #[error("unknown device '{0}' (cpu, vulkan or cuda)")]
    UnknownDevice(String),
    /// The device asked for cannot run the model here.
    #[error("{device} cannot run the model: {reason}")]
    DeviceUnavailable {
        /// The device asked for.
        device: &'static str,
        /// Why, and what to do.
        reason: String,
    },
}

/// Something that did not stop the load but changes what was loaded; for the caller to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadWarning {
    /// The weights could not be interleaved and are used as mapped: decode is slower.
    KeptAsMapped {
        /// Why interleaving failed.
        reason: String,
    },
    /// Bfloat16 vision products were asked for, but this CPU has no bfloat16 dot instruction:
    /// the products stay exact F16.
    NoBf16Dot,
    /// The device holds fewer text layers than asked for (its memory ran out); the rest run on
    /// the CPU.
    FewerDeviceLayers {
        /// The device.
        device: String,
        /// Layers asked for (capped at the layer count).
        asked: usize,
        /// Layers it holds.
        placed: usize,
        /// Whether the output norm and matrix were asked for but stayed on the CPU.
        output_left: bool,
        /// What the device refused (out of memory, a buffer past its largest).
        reason: String,
    },
    /// The vision encoder could not be put on the GPU (out of device memory, or weights its
    /// shaders do not take): it runs on the CPU.
    VisionOnCpu {
        /// Why.
        reason: String,
    },
    /// The model file's own chat template could not be used; a built-in stands in for it.
    ModelTemplateNotUsed {
        /// The text model file.
        file: PathBuf,
        /// Why its template was not used.
        reason: String,
        /// The built-in used instead.
        used: &'static str,
    },
}

impl std::fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadWarning::KeptAsMapped { reason } => write!(f, "weights kept as mapped ({reason})"),
            LoadWarning::NoBf16Dot => {
                f.write_str("this CPU has no bfloat16 dot instruction; vision products stay in F16")
            }
            LoadWarning::FewerDeviceLayers {
                device,
                asked,
                placed,
                output_left,
                reason,
            } => {
                write!(
                    f,
                    "{device} holds {placed} of the {asked} text layers asked for"
                )?;
                if *output_left {
                    f.write_str(" but not the output matrix")?;
                }
                write!(f, " ({reason}); the rest run on the CPU")
            }
            LoadWarning::VisionOnCpu { reason } => {
                write!(f, "the vision encoder runs on the CPU: {reason}")
            }
            LoadWarning::ModelTemplateNotUsed { file, reason, used } => write!(
                f,
                "{}: tokenizer.chat_template not used ({reason}); using the built-in '{used}' \
                 template instead",
                file.display()
            ),
        }
    }
}

/// The mapped model files, which the loaded models borrow their weights from.
pub struct ModelFiles {
    /// The text model file, interleaved when asked and possible.
    pub text: GgufFile,
    /// The mmproj file.
    pub mmproj: Option<GgufFile>,
    /// What opening them gave to warn about.
    warnings: Vec<LoadWarning>,
}

/// The text model and vision encoder of [`ModelFiles`], without tokenizer or chat template
/// (what a benchmark of the forward passes needs).
pub struct Models<'a> {
    /// The language model.
    pub text: TextModel<'a>,
    /// The vision encoder and projector, when there is an mmproj.
    pub vision: Option<VisionEncoder<'a>>,
    /// Everything loading gave to warn about, the files' warnings first.
    pub warnings: Vec<LoadWarning>,
}

/// A pipeline ready for requests, and what loading it gave to warn about.
pub struct Loaded<'a> {
    /// The pipeline.
    pub pipeline: Pipeline<'a, Tokenizer>,
    /// Warnings, in the order they arose.
    pub warnings: Vec<LoadWarning>,
}

impl ModelFiles {
    /// Maps the files of `opts`, interleaves the text weights on `pool` when `opts.repack`, and
    /// pages both files in, so the first request's time to first token is compute rather than
    /// page faults (as llama.cpp reads its weights at load).
    pub fn open(opts: &LoadOptions, pool: &ThreadPool) -> Result<ModelFiles, LoadError> {
        let mut warnings = Vec::new();
        let mut text = GgufFile::open(&opts.model).map_err(TextError::from)?;
        // Weights a GPU takes are uploaded in the file's order: interleaving them for the
        // CPU's decode would only add private copies (on a Jetson, of the memory the GPU
        // shares).
        if opts.repack && !(opts.gpu_layers.is_none() && gpu_chosen(opts.device)) {
            if let Err(e) = crate::text::interleave_weights(&mut text, pool) {
                // The file still loads as mapped; only decode is slower.
                warnings.push(LoadWarning::KeptAsMapped {
                    reason: e.to_string(),
                });
            }
        }
        text.populate();
        let mmproj = match &opts.mmproj {
            Some(p) => Some(GgufFile::open(p).map_err(VisionError::from)?),
            None => None,
        };
        if let Some(f) = &mmproj {
            f.populate();
        }
        Ok(ModelFiles {
            text,
            mmproj,
            warnings,
        })
    }

    /// Loads the text model and the vision encoder, and checks that the projector's output is
    /// as wide as the text model's embeddings (here too, not only in [`Pipeline::new`]: a
    /// benchmark uses the models without a pipeline, and the check comes before the upload).
    pub fn models(&self, opts: &LoadOptions) -> Result<Models<'_>, LoadError> {
        let mut warnings = self.warnings.clone();
        let mut text = TextModel::load(&self.text)?;
        let gpu = place(&mut text, opts, &mut warnings)?;
        let mut vision = self.mmproj.as_ref().map(VisionEncoder::load).transpose()?;
        if let Some(v) = vision.as_mut() {
            v.check_text_width(text.config.n_embd, self.text.path())?;
            v.pad_square = opts.pad_square;
            if opts.vision_bf16 && !v.use_bf16_products() {
                warnings.push(LoadWarning::NoBf16Dot);
            }
            // The encoder goes to the GPU whenever one is used, whatever -ngl says (as
            // llama.cpp offloads its mmproj).
            #[cfg(feature = "vulkan")]
            if let Some(g) = gpu {
                if let Err(e) = v.offload(g) {
                    warnings.push(LoadWarning::VisionOnCpu {
                        reason: e.to_string(),
                    });
                }
            }
        }
        #[cfg(not(feature = "vulkan"))]
        let _ = gpu;
        Ok(Models {
            text,
            vision,
            warnings,
        })
    }

    /// The models, the tokenizer and the chat template as a [`Pipeline`] running on `pool`.
    pub fn pipeline(&self, opts: &LoadOptions, pool: ThreadPool) -> Result<Loaded<'_>, LoadError> {
        let Models {
            text,
            vision,
            mut warnings,
        } = self.models(opts)?;
        let tokenizer =
            Tokenizer::from_gguf(&self.text).map_err(|source| LoadError::Tokenizer {
                path: self.text.path().to_path_buf(),
                source,
            })?;
        let template = chat_template(opts, &self.text, &text, &tokenizer, &mut warnings)?;
        Ok(Loaded {
            pipeline: Pipeline::new(text, vision, tokenizer, template, pool)?,
            warnings,
        })
    }
}

/// Puts the text layers where `opts` asks: the CPU, or a GPU for the last `gpu_layers`.
/// Whether `device` (None: the default) means a GPU here.
fn gpu_chosen(device: Option<Device>) -> bool {
    match device {
        Some(Device::Vulkan) => true,
        Some(Device::Cpu | Device::Cuda) => false,
        #[cfg(feature = "vulkan")]
        None => gpu_present(),
        #[cfg(not(feature = "vulkan"))]
        None => false,
    }
}

/// Whether a Vulkan device other than the CPU itself is present: listed once a process
/// (loading the drivers costs time and memory; no device is opened for the answer).
#[cfg(feature = "vulkan")]
fn gpu_present() -> bool {
    static PRESENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PRESENT.get_or_init(|| {
        // Listing devices loads every installed driver, lavapipe's LLVM included, which stays
        // mapped after the loader is closed: where no GPU's device file is visible, no driver
        // can offer a GPU, and that cost buys nothing.
        gpu_device_file_present().unwrap_or(true)
            && crate::vulkan::Vulkan::devices()
                .is_ok_and(|ds| ds.iter().any(|d| d.kind != crate::vulkan::DeviceKind::Cpu))
    })
}

/// Whether /dev holds a file a GPU's Vulkan driver opens (None: /dev unreadable, not known).
/// Mesa's drivers (and AMDVLK, PowerVR, virtio) open a DRM render node; the others their
/// vendor's own files: NVIDIA's desktop and Jetson drivers, Qualcomm's KGSL, Arm's Mali,
/// Vivante's galcore, WSL's dxg.
#[cfg(all(feature = "vulkan", target_os = "linux"))]
fn gpu_device_file_present() -> Option<bool> {
    gpu_file_in(Path::new("/dev"))
}

/// Elsewhere drivers reach the GPU through the system's own interfaces: always listed.
#[cfg(all(feature = "vulkan", not(target_os = "linux")))]
fn gpu_device_file_present() -> Option<bool> {
    None
}

/// [`gpu_device_file_present`] on a directory laid out as /dev.
#[cfg(any(test, all(feature = "vulkan", target_os = "linux")))]
fn gpu_file_in(dev: &Path) -> Option<bool> {
    const VENDOR: [&str; 7] = [
        "nvidiactl",
        "nvhost-ctrl-gpu",
        "nvgpu",
        "kgsl-3d0",
        "mali0",
        "galcore",
        "dxg",
    ];
    let names: Vec<String> = std::fs::read_dir(dev)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    if names.iter().any(|n| VENDOR.contains(&n.as_str())) {
        return Some(true);
    }
    // An unreadable /dev/dri is not proof of absence.
    let dri = match std::fs::read_dir(dev.join("dri")) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    Some(dri.filter_map(|e| e.ok()).any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        n.starts_with("renderD") || n.starts_with("card")
    }))
}

/// Returns the GPU chosen (None: the CPU), for the vision encoder.
fn place(
    text: &mut TextModel,
    opts: &LoadOptions,
    warnings: &mut Vec<LoadWarning>,
) -> Result<Option<Gpu>, LoadError> {
    let asked = opts.gpu_layers.unwrap_or(usize::MAX);
    match opts.device {
        Some(Device::Cpu) => Ok(None),
        Some(Device::Cuda) => Err(LoadError::DeviceUnavailable {
            device: "CUDA",
            reason: if cfg!(feature = "cuda") {
                "its kernels are built and tested, but the models do not offload to them yet; \
                 on an NVIDIA GPU use its Vulkan driver, or run on the CPU"
                    .into()
            } else {
                "this build has no CUDA support (cargo feature `cuda`), and the models do not \
                 offload to it yet; on an NVIDIA GPU use its Vulkan driver, or run on the CPU"
                    .into()
            },
        }),
        #[cfg(feature = "vulkan")]
        Some(Device::Vulkan) => {
            let vk = crate::vulkan::Vulkan::new(opts.vulkan_index).map_err(|e| {
                LoadError::DeviceUnavailable {
                    device: "Vulkan",
                    reason: e.to_string(),
                }
            })?;
            offload(text, vk, asked, opts, warnings)
        }
        #[cfg(not(feature = "vulkan"))]
        Some(Device::Vulkan) => Err(LoadError::DeviceUnavailable {
            device: "Vulkan",
            reason: "this build has no Vulkan support (cargo feature `vulkan`); run on the CPU"
                .into(),
        }),
        None => {
            // A Vulkan device on the CPU (lavapipe) is slower than the CPU's own kernels:
            // used only when asked for by name.
            #[cfg(feature = "vulkan")]
            if gpu_present() {
                if let Ok(vk) = crate::vulkan::Vulkan::new(None) {
                    if vk.info().kind != crate::vulkan::DeviceKind::Cpu {
                        return offload(text, vk, asked, opts, warnings);
                    }
                }
            }
            #[cfg(not(feature = "vulkan"))]
            let _ = (text, asked, warnings);
            Ok(None)
        }
    }
}

#[cfg(feature = "vulkan")]
fn offload(
    text: &mut TextModel,
    vk: crate::vulkan::Vulkan,
    asked: usize,
    opts: &LoadOptions,
    warnings: &mut Vec<LoadWarning>,
) -> Result<Option<Gpu>, LoadError> {
    let n_layer = text.config.n_layer;
    let device = vk.info().name.clone();
    let backend = crate::backend::vulkan::Vulkan::new(vk, opts.device_memory);
    // The same device and memory budget, for the vision encoder.
    let gpu = backend.session();
    let placed = text.offload(backend, asked)?;
    let output_left = asked >= n_layer && !placed.output_on_device;
    if placed.device_layers < asked.min(n_layer) || output_left {
        warnings.push(LoadWarning::FewerDeviceLayers {
            device,
            asked: asked.min(n_layer),
            placed: placed.device_layers,
            output_left,
            reason: placed.held_back.unwrap_or_default(),
        });
    }
    Ok(Some(gpu))
}

/// The GPU backend the models run on, where the build has one.
#[cfg(feature = "vulkan")]
type Gpu = crate::backend::vulkan::Vulkan;
#[cfg(not(feature = "vulkan"))]
type Gpu = std::convert::Infallible;

/// The chat template: the one `opts` names, else the model file's own, else (when that cannot
/// be used, with a warning) the built-in its markers name or the architecture's usual one.
fn chat_template(
    opts: &LoadOptions,
    file: &GgufFile,
    text: &TextModel,
    tokenizer: &Tokenizer,
    warnings: &mut Vec<LoadWarning>,
) -> Result<ChatTemplate, LoadError> {
    let tokens = SpecialTokens::from_tokenizer(tokenizer);
    if let Some(name) = &opts.chat_template {
        return named_template(name, tokens);
    }
    let fallback = match text.config.arch {
        Arch::Qwen2 => ChatTemplate::ChatMl,
        Arch::Llama => ChatTemplate::Vicuna,
    };
    let file_template = file
        .get(crate::gguf::keys::tokenizer::CHAT_TEMPLATE)
        .and_then(|v| v.as_str());
    let (t, why) = ChatTemplate::for_model(file_template, tokens, fallback);
    if let Some(e) = why {
        warnings.push(LoadWarning::ModelTemplateNotUsed {
            file: file.path().to_path_buf(),
            reason: e.to_string(),
            used: t.name(),
        });
    }
    Ok(t)
}

/// A built-in template by name, or a Jinja template read from the file `name`.
fn named_template(name: &str, tokens: SpecialTokens) -> Result<ChatTemplate, LoadError> {
    if let Some(t) = ChatTemplate::from_name(name) {
        return Ok(t);
    }
    if !Path::new(name).is_file() {
        let names: Vec<&str> = ChatTemplate::ALL.iter().map(|t| t.name()).collect();
        return Err(LoadError::UnknownTemplate {
            name: name.to_string(),
            known: names.join(", "),
        });
    }
    std::fs::read_to_string(name)
        .map_err(|e| e.to_string())
        .and_then(|src| ChatTemplate::jinja(&src, tokens).map_err(|e| e.to_string()))
        .map_err(|problem| LoadError::TemplateFile {
            path: name.into(),
            problem,
        })
}

/// The KV cache type named `name`: `f16` or `f32`.
pub fn kv_type(name: &str) -> Result<KvType, LoadError> {
    match name {
        "f16" => Ok(KvType::F16),
        "f32" => Ok(KvType::F32),
        other => Err(LoadError::UnknownCacheType(other.to_string())),
    }
}

/// Context positions when none are asked for, unless the model was trained on fewer.
pub const DEFAULT_CONTEXT: usize = 4096;

/// The context size for a model trained on `trained` positions: `requested`, where 0 means the
/// trained length; by default [`DEFAULT_CONTEXT`] or the trained length when that is smaller.
pub fn context_size(requested: Option<usize>, trained: usize) -> usize {
    match requested {
        Some(0) => trained,
        Some(n) => n,
        None => trained.min(DEFAULT_CONTEXT),
    }
}

/// Threads by default: one per physical core this process may run on, as llama.cpp does (two
/// SMT siblings share a core's SIMD units and its memory bandwidth, so a second thread on a
/// core slows the others down more than it adds).
pub fn default_threads() -> usize {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    physical_cores().map_or(available, |p| p.clamp(1, available))
}

/// Distinct (package, core) pairs among the CPUs in this process's affinity mask, from sysfs;
/// `None` where that cannot be read.
#[cfg(target_os = "linux")]
fn physical_cores() -> Option<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set, and sched_getaffinity writes at most its size.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        set
    };
    let allowed = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) });
    let mut cores = Vec::new();
    for cpu in allowed {
        let topo = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let read = |f: &str| -> Option<i64> {
            std::fs::read_to_string(format!("{topo}/{f}"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        cores.push((read("physical_package_id")?, read("core_id")?));
    }
    distinct_cores(cores)
}

#[cfg(not(target_os = "linux"))]
fn physical_cores() -> Option<usize> {
    None
}

/// How many different cores `(package, core)` pairs name (SMT siblings share one).
fn distinct_cores(mut cores: Vec<(i64, i64)>) -> Option<usize> {
    cores.sort_unstable();
    cores.dedup();
    (!cores.is_empty()).then_some(cores.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smt_siblings_count_once() {
        let cores = vec![(0, 0), (0, 1), (0, 0), (0, 1), (1, 0)];
        assert_eq!(distinct_cores(cores), Some(3));
        assert_eq!(distinct_cores(Vec::new()), None);
        let t = default_threads();
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!((1..=available).contains(&t), "{t} threads of {available}");
    }

    /// A server shares one loaded pipeline between its request threads by reference.
    #[test]
    fn a_loaded_pipeline_is_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<ModelFiles>();
        shared::<Loaded<'static>>();
        shared::<Pipeline<'static, Tokenizer>>();
    }

    #[test]
    fn context_and_cache_type_defaults() {
        assert_eq!(context_size(None, 1024), 1024);
        assert_eq!(context_size(None, 32768), DEFAULT_CONTEXT);
        assert_eq!(context_size(Some(0), 32768), 32768);
        assert_eq!(context_size(Some(100), 32768), 100);
        assert_eq!(kv_type("f16").unwrap(), KvType::F16);
        assert_eq!(kv_type("f32").unwrap(), KvType::F32);
        let e = kv_type("q8").unwrap_err();
        assert_eq!(e.to_string(), "unknown cache type 'q8' (f16 or f32)");
    }

    #[test]
    fn device_names() {
        assert_eq!(Device::from_name("cpu").unwrap(), Device::Cpu);
        assert_eq!(Device::from_name("vulkan").unwrap(), Device::Vulkan);
        assert_eq!(Device::from_name("cuda").unwrap(), Device::Cuda);
        let e = Device::from_name("gpu").unwrap_err();
        assert_eq!(e.to_string(), "unknown device 'gpu' (cpu, vulkan or cuda)");
        assert!(!e.to_string().contains("--"), "no flag names: {e}");
        assert!(gpu_chosen(Some(Device::Vulkan)));
        assert!(!gpu_chosen(Some(Device::Cpu)) && !gpu_chosen(Some(Device::Cuda)));
    }

    #[test]
    fn gpu_device_files() {
        let dev = std::env::temp_dir().join(format!("llava-edge-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dev);
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("null"), b"").unwrap();
        assert_eq!(gpu_file_in(&dev), Some(false), "no dri, no vendor file");
        std::fs::create_dir(dev.join("dri")).unwrap();
        std::fs::write(dev.join("dri/by-path"), b"").unwrap();
        assert_eq!(gpu_file_in(&dev), Some(false), "an empty dri");
        std::fs::write(dev.join("dri/renderD128"), b"").unwrap();
        assert_eq!(gpu_file_in(&dev), Some(true), "a render node");
        std::fs::remove_file(dev.join("dri/renderD128")).unwrap();
        std::fs::write(dev.join("nvidiactl"), b"").unwrap();
        assert_eq!(gpu_file_in(&dev), Some(true), "NVIDIA's control file");
        std::fs::remove_dir_all(&dev).unwrap();
        assert_eq!(gpu_file_in(&dev), None, "no /dev: not known");
    }

    #[test]
    fn template_names_and_files() {
        let tokens = SpecialTokens::default();
        assert_eq!(
            named_template("chatml", tokens.clone()).unwrap(),
            ChatTemplate::ChatMl
        );
        let e = named_template("/nonexistent/nope", tokens).unwrap_err();
        assert!(matches!(e, LoadError::UnknownTemplate { .. }), "{e}");
        assert!(!e.to_string().contains("--"), "no flag names: {e}");
    }
}
