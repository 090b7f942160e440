"""Device-call diagnostics for issue 13 (not part of the product): AOTI fresh-process load,
and TorchInductor mega-cache reuse in a fresh process with fresh cache dirs."""
import os, subprocess, sys, time, json, pathlib, traceback

OUT = pathlib.Path(os.environ.get("OUT", "/tmp/out"))
HERE = pathlib.Path.cwd()


def sh(cmd, log, env=None, timeout=400):
    t = time.perf_counter()
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, env={**os.environ, **(env or {})},
                       timeout=timeout)
    dt = time.perf_counter() - t
    (OUT / log).write_text(f"$ {cmd}\nrc={p.returncode} {dt:.1f}s\n{p.stdout}\n--stderr--\n{p.stderr}")
    return p.returncode, dt, p.stdout + p.stderr


TOY_BUILD = r'''
import torch, sys
from torch._inductor import aoti_compile_and_package
m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).cuda()
x = torch.rand(4, 16, device="cuda")
b = torch.export.Dim("batch", min=2, max=64)
with torch.no_grad():
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: b},))
    p = aoti_compile_and_package(ep, package_path=sys.argv[1])
    f = torch._inductor.aoti_load_package(p)
    print("same-process load ok", f(x).shape)
'''
TOY_LOAD = r'''
import sys, ctypes, torch, traceback, logging
logging.basicConfig(level=logging.INFO)
if sys.argv[2] == "global": ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
if sys.argv[2] == "triton":
    import triton; triton.runtime.driver.active.get_current_device()
x = torch.rand(4, 16, device="cuda")
from torch.export.pt2_archive._package import load_pt2
try:
    c = load_pt2(sys.argv[1]); print("load_pt2 ok", list(c.aoti_runners)); print(c.aoti_runners["model"](x).shape)
except Exception: traceback.print_exc()
try:
    l = torch._C._aoti.AOTIModelPackageLoader(sys.argv[1], "model", False, 1, -1); print("legacy ok")
except Exception: traceback.print_exc()
'''


def aoti_toy():
    pkg = "/tmp/toy.pt2"
    (OUT / "toy_build.py").write_text(TOY_BUILD); (OUT / "toy_load.py").write_text(TOY_LOAD)
    rc, dt, _ = sh(f"python3 {OUT}/toy_build.py {pkg}", "aoti-toy-build.log")
    for v in ("plain", "global", "triton"):
        sh(f"python3 {OUT}/toy_load.py {pkg} {v}", f"aoti-toy-load-{v}.log")
    sh(f"cd /tmp && rm -rf toyx && mkdir toyx && cd toyx && python3 -m zipfile -e {pkg} . && find . -type f | head -50 "
       f"&& for s in $(find . -name '*.so'); do echo == $s; ldd $s; nm -D --undefined-only $s | grep -v -i torch | head -40; done",
       "aoti-toy-contents.log")


MEGA = r'''
import os, sys, time, pathlib, json
t0 = time.perf_counter()
import torch
from rtvol.services.model.backends import ModelFiles, batch_buckets
from rtvol.services.model.backends.cuda_graph import CudaGraphBackend
t1 = time.perf_counter()
vdir = pathlib.Path(sys.argv[1]); blob = pathlib.Path(sys.argv[2]); mode = sys.argv[3]
if mode == "load":
    info = torch.compiler.load_cache_artifacts(blob.read_bytes())
    print("loaded:", info)
t2 = time.perf_counter()
b = CudaGraphBackend(ModelFiles(vdir, "window", ("rv", "direction", "momentum"), 1024), "fp16")
t3 = time.perf_counter()
b.warmup(batch_buckets(1024))
t4 = time.perf_counter()
if mode == "save":
    art = torch.compiler.save_cache_artifacts()
    blob.write_bytes(art[0]); print("saved", len(art[0]), "bytes;", art[1])
print(json.dumps({"mode": mode, "source": b.source, "import_s": t1 - t0, "load_cache_s": t2 - t1,
                  "backend_s": t3 - t2, "warmup_s": t4 - t3, "total_s": time.perf_counter() - t0}))
'''


def mega(vdir):
    (OUT / "mega.py").write_text(MEGA)
    blob = "/tmp/mega.bin"
    res = {}
    for i, mode in enumerate(("save", "load", "load")):
        env = {"TORCHINDUCTOR_CACHE_DIR": f"/tmp/ind{i}", "TRITON_CACHE_DIR": f"/tmp/tri{i}"}
        rc, dt, text = sh(f"python3 {OUT}/mega.py {vdir} {blob} {mode}", f"mega-{i}-{mode}.log", env)
        res[f"{i}-{mode}"] = {"rc": rc, "wall_s": round(dt, 2), "last": text.strip().splitlines()[-1:]}
    return res


def main():
    import concurrent.futures as cf
    sh("nvidia-smi; python3 -c 'import torch, triton, sys; print(sys.version, torch.__version__, triton.__version__, torch.version.cuda)'; nproc; free -g; /tmp/redis-server --version || true", "env.log")
    sh("python3 -c 'import sys, pathlib; sys.path.insert(0, \"tests\"); import helpers.models as m; m.export_random(pathlib.Path(\"/tmp/models\"), seed=0)'", "export.log")
    vdir = next(pathlib.Path("/tmp/models/rtvol_cnn").iterdir())
    with cf.ThreadPoolExecutor(3) as ex:
        fa = ex.submit(aoti_toy)
        ft = ex.submit(sh, "python3 -m pytest -q -p no:cacheprovider --noconftest -m gpu tests/unit/test_triton_kernels.py", "triton-tests.log")
        fa.result(); t = ft.result()
    print("triton tests:", t[0], round(t[1], 1), t[2].strip().splitlines()[-1:])
    r = mega(vdir)
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
