//! The CUDA backend's runtime (feature `cuda`): the driver (`libcuda.so.1`) and NVRTC
//! (`libnvrtc.so.12`) are opened with dlopen when first asked for, so neither is needed to
//! build or to start; `kernels/cuda/llava_kernels.cu` is compiled for the GPU found and the PTX
//! cached on disk. A machine without a driver or GPU gets a [`CudaError`] that says so, and
//! callers stay on the CPU.
//!
//! Status: the kernels compile in CI for every supported architecture; this runtime and the
//! kernels have not yet run on a GPU (tests/cuda_kernels.rs compares each with the CPU kernels
//! and skips with one line when no GPU is present).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::path::PathBuf;

use libloading::Library;

/// The kernels' source, compiled by NVRTC at first use.
pub const SOURCE: &str = include_str!("../../kernels/cuda/llava_kernels.cu");

/// What can keep the GPU from being used.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The driver or NVRTC library could not be opened.
    #[error("CUDA unavailable: cannot load {lib}: {reason}")]
    Library { lib: &'static str, reason: String },
    /// The driver loaded but reports no GPU.
    #[error("CUDA unavailable: the driver reports no GPU")]
    NoDevice,
    /// A driver call failed.
    #[error("CUDA: {call} failed with error {code}")]
    Driver { call: &'static str, code: i32 },
    /// The kernels did not compile for this GPU.
    #[error("NVRTC could not compile the kernels for {arch}: {log}")]
    Compile { arch: String, log: String },
}

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type CuModule = *mut c_void;
/// A kernel handle.
pub type CuFunction = *mut c_void;
/// A device address.
pub type DevicePtr = u64;

const ATTR_CC_MAJOR: c_int = 75;
const ATTR_CC_MINOR: c_int = 76;

macro_rules! sym {
    ($lib:expr, $name:literal, $ty:ty) => {{
        // SAFETY: the symbol is the CUDA driver / NVRTC function of that name, whose C
        // signature `$ty` spells out (CUDA's cuda.h / nvrtc.h).
        let s: libloading::Symbol<$ty> =
            unsafe { $lib.get($name) }.map_err(|e| CudaError::Library {
                lib: "a CUDA symbol",
                reason: e.to_string(),
            })?;
        *s
    }};
}

/// The driver functions used, resolved once.
struct Driver {
    mem_alloc: unsafe extern "C" fn(*mut DevicePtr, usize) -> CuResult,
    mem_free: unsafe extern "C" fn(DevicePtr) -> CuResult,
    htod: unsafe extern "C" fn(DevicePtr, *const c_void, usize) -> CuResult,
    dtoh: unsafe extern "C" fn(*mut c_void, DevicePtr, usize) -> CuResult,
    launch: unsafe extern "C" fn(
        CuFunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        *mut c_void,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
    sync: unsafe extern "C" fn() -> CuResult,
    get_function: unsafe extern "C" fn(*mut CuFunction, CuModule, *const c_char) -> CuResult,
    ctx_destroy: unsafe extern "C" fn(CuContext) -> CuResult,
}

/// An open GPU: its context and the compiled kernels.
pub struct Cuda {
    _lib: Library,
    drv: Driver,
    ctx: CuContext,
    module: CuModule,
    /// The device's name, as the driver gives it.
    pub name: String,
    /// Compute capability (major, minor).
    pub arch: (i32, i32),
}

fn check(call: &'static str, code: CuResult) -> Result<(), CudaError> {
    if code == 0 {
        Ok(())
    } else {
        Err(CudaError::Driver { call, code })
    }
}

impl Cuda {
    /// Opens GPU `ordinal`, compiling (or loading the cached) kernels for it.
    pub fn open(ordinal: i32) -> Result<Cuda, CudaError> {
        // SAFETY: loading the system's CUDA driver library runs its initialisers, which is
        // what every CUDA program does.
        let lib = unsafe { Library::new("libcuda.so.1") }.map_err(|e| CudaError::Library {
            lib: "libcuda.so.1",
            reason: e.to_string(),
        })?;
        let init = sym!(lib, b"cuInit", unsafe extern "C" fn(c_uint) -> CuResult);
        let count = sym!(
            lib,
            b"cuDeviceGetCount",
            unsafe extern "C" fn(*mut c_int) -> CuResult
        );
        let get = sym!(
            lib,
            b"cuDeviceGet",
            unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult
        );
        let attr = sym!(
            lib,
            b"cuDeviceGetAttribute",
            unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult
        );
        let name_fn = sym!(
            lib,
            b"cuDeviceGetName",
            unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult
        );
        let ctx_create = sym!(
            lib,
            b"cuCtxCreate_v2",
            unsafe extern "C" fn(*mut CuContext, c_uint, CuDevice) -> CuResult
        );
        let load = sym!(
            lib,
            b"cuModuleLoadData",
            unsafe extern "C" fn(*mut CuModule, *const c_void) -> CuResult
        );
        let drv = Driver {
            mem_alloc: sym!(
                lib,
                b"cuMemAlloc_v2",
                unsafe extern "C" fn(*mut DevicePtr, usize) -> CuResult
            ),
            mem_free: sym!(
                lib,
                b"cuMemFree_v2",
                unsafe extern "C" fn(DevicePtr) -> CuResult
            ),
            htod: sym!(
                lib,
                b"cuMemcpyHtoD_v2",
                unsafe extern "C" fn(DevicePtr, *const c_void, usize) -> CuResult
            ),
            dtoh: sym!(
                lib,
                b"cuMemcpyDtoH_v2",
                unsafe extern "C" fn(*mut c_void, DevicePtr, usize) -> CuResult
            ),
            launch: sym!(
                lib,
                b"cuLaunchKernel",
                unsafe extern "C" fn(
                    CuFunction,
                    c_uint,
                    c_uint,
                    c_uint,
                    c_uint,
                    c_uint,
                    c_uint,
                    c_uint,
                    *mut c_void,
                    *mut *mut c_void,
                    *mut *mut c_void,
                ) -> CuResult
            ),
            sync: sym!(lib, b"cuCtxSynchronize", unsafe extern "C" fn() -> CuResult),
            get_function: sym!(
                lib,
                b"cuModuleGetFunction",
                unsafe extern "C" fn(*mut CuFunction, CuModule, *const c_char) -> CuResult
            ),
            ctx_destroy: sym!(
                lib,
                b"cuCtxDestroy_v2",
                unsafe extern "C" fn(CuContext) -> CuResult
            ),
        };
        // SAFETY (this block): plain driver calls with valid out-pointers, in the order the
        // driver API requires (init, device, context, module).
        unsafe {
            check("cuInit", init(0))?;
            let mut n = 0;
            check("cuDeviceGetCount", count(&mut n))?;
            if n <= ordinal {
                return Err(CudaError::NoDevice);
            }
            let mut dev = 0;
            check("cuDeviceGet", get(&mut dev, ordinal))?;
            let (mut major, mut minor) = (0, 0);
            check("cuDeviceGetAttribute", attr(&mut major, ATTR_CC_MAJOR, dev))?;
            check("cuDeviceGetAttribute", attr(&mut minor, ATTR_CC_MINOR, dev))?;
            // The driver writes at most 255 bytes, so the last zero keeps the name terminated
            // for `CStr::from_ptr`.
            let mut buf = [0 as c_char; 256];
            check("cuDeviceGetName", name_fn(buf.as_mut_ptr(), 255, dev))?;
            let name = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
            let ptx = ptx_for(major, minor)?;
            let mut ctx = std::ptr::null_mut();
            check("cuCtxCreate", ctx_create(&mut ctx, 0, dev))?;
            let mut module = std::ptr::null_mut();
            let image = CString::new(ptx).expect("PTX has no NUL");
            if let Err(e) = check("cuModuleLoadData", load(&mut module, image.as_ptr().cast())) {
                // The context would otherwise outlive the error: no `Cuda` owns it yet.
                (drv.ctx_destroy)(ctx);
                return Err(e);
            }
            Ok(Cuda {
                _lib: lib,
                drv,
                ctx,
                module,
                name,
                arch: (major, minor),
            })
        }
    }

    /// A kernel of the module by name.
    pub fn function(&self, name: &str) -> Result<CuFunction, CudaError> {
        let c = CString::new(name).expect("kernel names have no NUL");
        let mut f = std::ptr::null_mut();
        // SAFETY: the module is loaded for this context; `f` is a valid out-pointer.
        check("cuModuleGetFunction", unsafe {
            (self.drv.get_function)(&mut f, self.module, c.as_ptr())
        })?;
        Ok(f)
    }

    /// A device buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<Buffer<'_>, CudaError> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let b = self.alloc(bytes.len())?;
        // SAFETY: `b` holds bytes.len() bytes of device memory.
        check("cuMemcpyHtoD", unsafe {
            (self.drv.htod)(b.ptr, bytes.as_ptr().cast(), bytes.len())
        })?;
        Ok(b)
    }

    /// An uninitialised device buffer of `bytes` bytes.
    pub fn alloc(&self, bytes: usize) -> Result<Buffer<'_>, CudaError> {
        let mut ptr = 0;
        // SAFETY: a valid out-pointer; the size is what the caller asks for (at least 1 byte).
        check("cuMemAlloc", unsafe {
            (self.drv.mem_alloc)(&mut ptr, bytes.max(1))
        })?;
        Ok(Buffer {
            gpu: self,
            ptr,
            bytes,
        })
    }

    /// Launches `f` on a grid of `grid` blocks of `block` threads with `shared` bytes of dynamic
    /// shared memory, then waits for it.
    ///
    /// # Safety
    /// `args` must match the kernel's parameters in number and type (pointers to each value),
    /// and every device address among them must be valid for what the kernel accesses.
    pub unsafe fn launch(
        &self,
        f: CuFunction,
        grid: (u32, u32),
        block: u32,
        shared: u32,
        args: &mut [*mut c_void],
    ) -> Result<(), CudaError> {
        // SAFETY: per the caller's contract.
        unsafe {
            check(
                "cuLaunchKernel",
                (self.drv.launch)(
                    f,
                    grid.0,
                    grid.1,
                    1,
                    block,
                    1,
                    1,
                    shared,
                    std::ptr::null_mut(),
                    args.as_mut_ptr(),
                    std::ptr::null_mut(),
                ),
            )?;
            check("cuCtxSynchronize", (self.drv.sync)())
        }
    }
}

impl Drop for Cuda {
    fn drop(&mut self) {
        // SAFETY: the context created in `open`, destroyed once.
        unsafe { (self.drv.ctx_destroy)(self.ctx) };
    }
}

/// Device memory, freed on drop.
pub struct Buffer<'g> {
    gpu: &'g Cuda,
    // Private, with `bytes`: `download` and the drop trust them to describe this allocation.
    ptr: DevicePtr,
    bytes: usize,
}

impl Buffer<'_> {
    /// Its device address (for kernel arguments).
    pub fn ptr(&self) -> DevicePtr {
        self.ptr
    }

    /// The buffer's contents.
    pub fn download<T: bytemuck::Pod + Default>(&self) -> Result<Vec<T>, CudaError> {
        let mut v = vec![T::default(); self.bytes / std::mem::size_of::<T>()];
        let out: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
        // SAFETY: `out` holds at most `bytes` bytes, all of which the allocation at `ptr` has
        // (both private, set together in `alloc`).
        check("cuMemcpyDtoH", unsafe {
            (self.gpu.drv.dtoh)(out.as_mut_ptr().cast(), self.ptr, out.len())
        })?;
        Ok(v)
    }
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated in `alloc` (`ptr` is private, so unchanged since), freed once here.
        unsafe { (self.gpu.drv.mem_free)(self.ptr) };
    }
}

/// The kernels' PTX for compute capability major.minor: from the on-disk cache when this
/// source was compiled for it before, else compiled by NVRTC and cached.
fn ptx_for(major: i32, minor: i32) -> Result<String, CudaError> {
    let arch = format!("compute_{major}{minor}");
    let hash = SOURCE.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| {
            d.join("llava-edge")
                .join(format!("kernels-{hash:016x}-{arch}.ptx"))
        });
    if let Some(p) = &cache {
        if let Ok(ptx) = std::fs::read_to_string(p) {
            return Ok(ptx);
        }
    }
    let ptx = compile(&arch)?;
    if let Some(p) = &cache {
        // A cache that cannot be written only costs a compile next time.
        let _ = std::fs::create_dir_all(p.parent().expect("cache file has a directory"));
        let _ = std::fs::write(p, &ptx);
    }
    Ok(ptx)
}

/// NVRTC compile of [`SOURCE`] for `arch` (e.g. "compute_87").
pub fn compile(arch: &str) -> Result<String, CudaError> {
    // SAFETY: loading NVRTC runs its initialisers only.
    let lib = unsafe { Library::new("libnvrtc.so.12") }
        .or_else(|_| unsafe { Library::new("libnvrtc.so") })
        .map_err(|e| CudaError::Library {
            lib: "libnvrtc.so.12",
            reason: e.to_string(),
        })?;
    type Prog = *mut c_void;
    let create = sym!(
        lib,
        b"nvrtcCreateProgram",
        unsafe extern "C" fn(
            *mut Prog,
            *const c_char,
            *const c_char,
            c_int,
            *const *const c_char,
            *const *const c_char,
        ) -> c_int
    );
    let compile = sym!(
        lib,
        b"nvrtcCompileProgram",
        unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int
    );
    let log_size = sym!(
        lib,
        b"nvrtcGetProgramLogSize",
        unsafe extern "C" fn(Prog, *mut usize) -> c_int
    );
    let log_fn = sym!(
        lib,
        b"nvrtcGetProgramLog",
        unsafe extern "C" fn(Prog, *mut c_char) -> c_int
    );
    let ptx_size = sym!(
        lib,
        b"nvrtcGetPTXSize",
        unsafe extern "C" fn(Prog, *mut usize) -> c_int
    );
    let ptx_fn = sym!(
        lib,
        b"nvrtcGetPTX",
        unsafe extern "C" fn(Prog, *mut c_char) -> c_int
    );
    let destroy = sym!(
        lib,
        b"nvrtcDestroyProgram",
        unsafe extern "C" fn(*mut Prog) -> c_int
    );
    let src = CString::new(SOURCE).expect("source has no NUL");
    let name = CString::new("llava_kernels.cu").expect("no NUL");
    let opts: Vec<CString> = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "-default-device".into(),
    ]
    .into_iter()
    .map(|o| CString::new(o).expect("no NUL"))
    .collect();
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY (this block): NVRTC's documented call sequence on one program, with buffers of the
    // sizes NVRTC reports.
    unsafe {
        let mut prog = std::ptr::null_mut();
        if create(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        ) != 0
        {
            return Err(CudaError::Compile {
                arch: arch.into(),
                log: "nvrtcCreateProgram failed".into(),
            });
        }
        let rc = compile(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr());
        let mut n = 0;
        log_size(prog, &mut n);
        let mut log = vec![0 as c_char; n.max(1)];
        log_fn(prog, log.as_mut_ptr());
        let log = CStr::from_ptr(log.as_ptr()).to_string_lossy().into_owned();
        if rc != 0 {
            destroy(&mut prog);
            return Err(CudaError::Compile {
                arch: arch.into(),
                log,
            });
        }
        ptx_size(prog, &mut n);
        let mut ptx = vec![0 as c_char; n.max(1)];
        ptx_fn(prog, ptx.as_mut_ptr());
        destroy(&mut prog);
        Ok(CStr::from_ptr(ptx.as_ptr()).to_string_lossy().into_owned())
    }
}
