"""MkDocs hook: the pages generated at build time.

- `api/*.md`: one page per public module of `tfkd` and one for the names
  `tfkd` exports itself, read from `tfkd/__init__.py`'s `__all__` (parsed,
  not imported: the docs environment has no TensorFlow). mkdocstrings
  renders each from its docstrings.
- `benchmarks.md`: every committed `benchmarks/results/*/results.json`,
  with its plots, its command and the commit it ran from. Results and plots
  are read as git holds them at HEAD (as `tests/committed.py` does), so a
  local `make results` that rewrote them cannot change the site.
- `distillation_walkthrough.ipynb`: `examples/`'s notebook, which
  mkdocs-jupyter renders without executing it (`tests/test_notebook.py`
  runs it).

Nothing here writes into the repository: generated files live only in the
build.
"""

import ast
import json
import pathlib
import subprocess

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = "examples/distillation_walkthrough.ipynb"

# ---------------------------------------------------------------- API pages


def _package_all(path):
    """`__all__` of a module file, and where each name is imported from."""
    tree = ast.parse(path.read_text())
    names, sources = [], {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "__all__" for t in node.targets):
            names = list(ast.literal_eval(node.value))
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sources[alias.asname or alias.name] = node.module
    return names, sources


def api_pages():
    """{path: markdown} of the API reference, from `tfkd.__all__`."""
    names, sources = _package_all(ROOT / "tfkd" / "__init__.py")
    lazy = {"tuning": "tfkd.tuning"}  # `tfkd.__getattr__`'s lazy submodule
    modules, top_level = {}, []
    for name in names:
        if name == "__version__":
            continue
        source = sources.get(name)
        if name in lazy:
            modules[name] = lazy[name]
        elif source == "tfkd":
            modules[name] = f"tfkd.{name}"
        elif source and (ROOT / (source.replace(".", "/") + f"/{name}.py")).exists():
            modules[name] = f"{source}.{name}"  # a module re-exported by name
        else:
            top_level.append((name, source))
    pages = {}
    lines = ["# `tfkd`", "",
             "The names `import tfkd` gives you directly; each subpackage has a "
             "page of its own (in the navigation on the left).", ""]
    for name, source in sorted(top_level, key=lambda item: item[0].lower()):
        lines += [f"::: tfkd.{name}", "    options:", "      heading_level: 2",
                  "      show_root_heading: true", "      show_root_full_path: false", ""]
    pages["api/index.md"] = "\n".join(lines)
    for name, module in sorted(modules.items()):
        pages[f"api/{name}.md"] = "\n".join([
            f"# `{module}`", "", f"::: {module}", "    options:",
            "      show_root_heading: false", "      show_root_toc_entry: false",
            "      heading_level: 2", ""])
    return pages


# ---------------------------------------------------------- benchmark page


def _git(*args, text=True):
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                          text=text, check=False)


def _in_git():
    return _git("rev-parse", "HEAD").returncode == 0


def committed_paths(folder="benchmarks/results"):
    if _in_git():
        return sorted(_git("ls-tree", "-r", "--name-only", "HEAD", "--", folder)
                      .stdout.split())
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*")
                  if p.is_file())


def committed_bytes(relative):
    if _in_git():
        shown = _git("show", f"HEAD:{relative}", text=False)
        if shown.returncode == 0:
            return shown.stdout
        raise FileNotFoundError(relative)
    return (ROOT / relative).read_bytes()


def _pct(value, digits=2):
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def _acc(acc):
    """'mean ± std %' of an accuracy dict (std over seeds, ddof 1)."""
    if not acc:
        return "—"
    if isinstance(acc, (int, float)):
        return _pct(acc)
    if acc.get("std") is None or len(acc.get("per_seed", [])) < 2:
        return _pct(acc.get("mean"))
    return f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} %"


def _pts(diff):
    """'+x.xx [low, high]' points of a paired difference dict."""
    if not diff:
        return "—"
    return (f"{100 * diff['mean']:+.2f} [{100 * diff['low']:+.2f}, "
            f"{100 * diff['high']:+.2f}]").replace("-", "−")


def _count(n):
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _arms_table(arms, *, gain_key, extra=()):
    header = ["Arm", "Accuracy", "Gain over scratch, points, 95 % CI"]
    header += [title for title, _ in extra]
    rows = []
    for arm in arms.values():
        if arm.get("status", "done") != "done":
            rows.append([arm.get("label", "?"), f"not run: {arm.get('error') or arm.get('status')}",
                         "—"] + ["—"] * len(extra))
            continue
        rows.append([arm.get("label", "?"), _acc(arm.get("accuracy")), _pts(gain_key(arm))]
                    + [fn(arm) for _, fn in extra])
    return _table(header, rows)


def _compare(r):
    derived = r.get("derived", {})

    def gain(arm):
        for key, value in r["arms"].items():
            if value is arm:
                return (derived.get(key) or {}).get("paired_difference_vs_scratch")
    lines = _arms_table(r["arms"], gain_key=gain, extra=[
        ("Trained on", lambda a: a.get("trained_on", "—")),
        ("Params", lambda a: _count(a["parameters"]) if a.get("parameters") else "—"),
        ("Latency p50 / p95", lambda a: (f"{a['latency_ms']['p50']:.2f} / "
                                         f"{a['latency_ms']['p95']:.2f} ms")
         if a.get("latency_ms") else "—")])
    ratios = derived.get("epoch_time_ratios") or {}
    if ratios:
        lines += ["", "Epoch-time ratios: " + ", ".join(
            f"{k.replace('_over_', ' ÷ ').replace('_', ' ')} {v:.2f}×"
            for k, v in ratios.items()) + "."]
    return lines


def _methods(r):
    return _arms_table(r["arms"], gain_key=lambda a: a.get("vs_scratch"), extra=[
        ("Epoch time ÷ scratch", lambda a: f"{a['epoch_time_vs_scratch']:.2f}"
         if a.get("epoch_time_vs_scratch") else "—")])


def _transfer(r):
    return _arms_table(r["arms"], gain_key=lambda a: a.get("vs_scratch"), extra=[
        ("T", lambda a: f"{a['temperature']:.2f}" if a.get("temperature") else "—"),
        ("α", lambda a: f"{a['alpha']:.2f}" if a.get("alpha") is not None else "—")])


def _capacity(r):
    rows = [[f"width {row['width']}", _count(row["parameters"]), _acc(row["scratch"]),
             _acc(row["distilled"]), _pts(row.get("kd_gain_interval"))]
            for row in r["rows"]]
    return _table(["Student", "Parameters", "From scratch", "Distilled",
                   "KD gain, points, 95 % CI"], rows)


def _gain(r):
    lines = []
    for axis in r["axes"].values():
        rows = [[row["value"], _acc(row["scratch"]), _acc(row["distilled"]),
                 _pts(row["gain"])] for row in axis["rows"]]
        lines += [f"**{axis['title']}**", ""]
        lines += _table([axis["x_label"], "Scratch", "Distilled",
                         "Gain, points, 95 % CI"], rows) + [""]
    return lines


def _teachers(r):
    rows = []
    for row in r["rows"]:
        if row.get("status") != "done":
            rows.append([row["id"], "not run", "—", "—", "—"])
            continue
        rows.append([row["id"], _count(row["parameters"]), _pct(row["accuracy"]),
                     f"{row['train_images_per_second']['median']:,.0f}",
                     f"{row['inference_images_per_second']['median']:,.0f}"])
    return _table(["Teacher", "Parameters", "Test accuracy (one run)",
                   "Training img/s (median)", "Inference img/s (median)"], rows)


def _deploy(r):
    rows = []
    for student in r["students"].values():
        for fmt, result in student["formats"].items():
            if result.get("status") != "done":
                rows.append([student["label"], fmt, "not run", "—", "—", "—"])
                continue
            lat = result.get("latency_ms") or {}
            rows.append([student["label"], fmt, _acc(result["accuracy"]),
                         _pts(result.get("vs_float32")),
                         f"{result['size_bytes'] / 1024:.1f} KB",
                         f"{lat.get('p50', 0):.3f} / {lat.get('p95', 0):.3f} ms"])
    return _table(["Student", "Format", "Accuracy", "Δ vs float32, points, 95 % CI",
                   "Size", "Latency p50 / p95"], rows)


def _cache_speed(r):
    rows = [[key.replace("_over_", " ÷ ").replace("_", " "), f"{v['median']:.2f}",
             f"{v['min']:.2f}–{v['max']:.2f}"] for key, v in r["ratios"].items()]
    lines = _table(["Ratio of wall times", "Median of paired ratios", "Min–max"], rows)
    return lines + ["", f"{r['disk']['bytes_per_example']:.0f} bytes per example on disk."]


def _backends(r):
    def ratio(summary, key, arm):
        value = (summary.get(key) or {}).get(arm)
        return "—" if not value else f"{value['median']:.2f}"

    rows = [[f"{name} {s['versions'].get(name, '')}",
             f"{s['epoch_seconds']['scratch']['median']:.3f}",
             f"{s['epoch_seconds']['kd']['median']:.3f}",
             f"{s['kd_over_scratch']['median']:.2f}", ratio(s, "over_tensorflow", "kd"),
             _acc(s["accuracy"]["scratch"]), _acc(s["accuracy"]["kd"])]
            for name, s in r["per_backend"].items()]
    lines = _table(["Backend", "Scratch epoch s", "KD epoch s", "KD ÷ scratch",
                    "KD ÷ TensorFlow", "Scratch accuracy", "KD accuracy"], rows)
    return lines + [""] + [f"Skipped {name}: {why}." for name, why
                           in r.get("backends_skipped", {}).items()]


def _cache_scale(r):
    rows = [[name.replace("_", " "), f"{v['bytes_per_example']:.1f}",
             f"{v['examples_per_second_median']:,.0f}"]
            for name, v in r["fashion_mnist"].items()]
    lines = _table(["Cache (Fashion-MNIST, 10 classes)", "Bytes per example",
                    "Build examples/s (median)"], rows)
    rows = [[name.replace("_", " "), f"{v['peak_rss_during_mb']:.0f} MB"]
            for name, v in r["memory"].items()]
    return lines + [""] + _table(["Task", "Peak resident memory"], rows)


RENDERERS = {
    "compare": _compare, "gain": _gain, "transfer": _transfer, "capacity": _capacity,
    "methods": _methods, "cache_speed": _cache_speed, "teachers": _teachers,
    "deploy": _deploy, "cache_scale": _cache_scale, "backends": _backends,
}


#: Plots drawn last on the page (the first ones are the experiment's summary).
PLOT_ORDER = {"training_curves.png": 1, "confusion_matrices.png": 2,
              "prediction_grid.png": 3}


def _command(r):
    if r["experiment"] == "cache_scale":
        return ("python scripts/cache_scale.py "
                "--out benchmarks/results/cache_scale/results.json")
    return (f"TFKD_BENCHMARK_OUTPUT=benchmarks/results python -m benchmarks "
            f"{r['experiment']} --preset {r['preset']}")


def _environment(r):
    env = r.get("environment") or {}
    versions = env or r.get("versions") or {}
    parts = [f"TensorFlow {versions['tensorflow']}" if versions.get("tensorflow") else None,
             f"Keras {versions['keras']}" if versions.get("keras") else None,
             f"AutoKeras {env['autokeras']}" if env.get("autokeras") else None]
    cpu = env.get("cpu") or ("CPU" if r.get("cpu_count") else None)
    cores = env.get("cpu_count") or r.get("cpu_count")
    machine = f"{cores} × {cpu}" if cpu and cores else cpu
    if env.get("device") and env["device"] != "CPU":
        machine = env["device"]
    return ", ".join(p for p in [machine] + parts if p)


def benchmark_page(files, config):
    """The benchmarks page's markdown; adds each plot to `files`."""
    lines = ["# Benchmarks", "",
             "Every result below is generated when the site is built, from the "
             "`results.json` committed in `benchmarks/results/` (read from git "
             "at `HEAD`), with the plots the run drew. Each names the commit it "
             "ran from (always a clean tree: `tests/test_committed_results.py` "
             "checks it) and the command that reruns it; `make results` reruns "
             "them all. Accuracy is the mean ± sample standard deviation over "
             "the seeds; a gain is the mean paired difference with its 95 % "
             "Student-t interval. Timings come from a shared 2-core machine: "
             "compare rows, not absolute speeds.", ""]
    paths = committed_paths()
    results = [p for p in paths if p.endswith("/results.json")]
    order = list(RENDERERS)
    loaded = []
    for path in results:
        r = json.loads(committed_bytes(path))
        loaded.append((order.index(r["experiment"]) if r["experiment"] in order
                       else len(order), path, r))
    for _, path, r in sorted(loaded, key=lambda item: item[:2]):
        folder = path.rsplit("/", 1)[0]
        name = folder.rsplit("/", 1)[1]
        commit = (r.get("git") or {}).get("commit") or "unknown"
        created = (r.get("created") or "")[:10] or "date not recorded"
        lines += [f"## `{name}`", ""]
        lines += [f"Run {created} from commit `{commit[:7]}` "
                  f"(`{commit}`){'' if (r.get('git') or {}).get('clean') else ', dirty tree'}"
                  f" on {_environment(r)}"
                  + (f", {r['wall_seconds'] / 60:.0f} min" if r.get("wall_seconds") else "")
                  + ".", ""]
        lines += ["```bash", _command(r), "```", ""]
        renderer = RENDERERS.get(r["experiment"])
        if renderer:
            lines += renderer(r) + [""]
        plots = sorted((p for p in paths if p.startswith(folder + "/") and p.endswith(".png")),
                       key=lambda p: (PLOT_ORDER.get(p.rsplit("/", 1)[1], 0), p))
        for png in plots:
            uri = f"benchmarks/{name}/{png.rsplit('/', 1)[1]}"
            files.append(File.generated(config, uri, content=committed_bytes(png)))
            lines += [f"![{name}: {png.rsplit('/', 1)[1]}]({uri})", ""]
        lines += [f"Source: `{path}`.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------- hooks


# Before the plugins' own on_files: mkdocs-jupyter picks its notebooks
# there, and mkdocstrings' autorefs need the API pages.
@event_priority(100)
def on_files(files, config):
    for path, text in api_pages().items():
        files.append(File.generated(config, path, content=text))
    files.append(File.generated(config, "benchmarks.md",
                                content=benchmark_page(files, config)))
    # A plain File (not File.generated), which mkdocs-jupyter can wrap.
    notebook = ROOT / NOTEBOOK
    files.append(File(notebook.name, src_dir=str(notebook.parent),
                      dest_dir=config["site_dir"],
                      use_directory_urls=config["use_directory_urls"]))
    return files
