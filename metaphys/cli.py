"""`metaphys` command line: bake, wedge, demo, train, eval, export-weights, average-snapshots, export-onnx,
export-solver (`--help` everywhere)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _load_optimizer(weights, device, dims: int = 2):
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim.weights import (DEFAULT_WEIGHTS_3D, WeightsError, load_torchscript, self_test, sha256_of,
                                        default_weights_path)
    path = weights or (DEFAULT_WEIGHTS_3D if dims == 3 else default_weights_path())
    try:
        model = load_torchscript(path, map_location=device)
    except WeightsError:
        raise
    except Exception as exc:  # a truncated or foreign file whose checksum was updated: torch's zip/pickle errors
        raise WeightsError(f"cannot load the Metamizer weights {path}: not a readable TorchScript file "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    optimizer, sha = Metamizer(model, device=device), sha256_of(path)
    if dims == 3:  # the self-test problem is 2-D: a 3-D bake checks the network's dimension (sims.common)
        from metaphys.sims.common import optimizer_for
        return optimizer_for(optimizer, device=device, dims=3), sha
    self_test(optimizer, sha, source=path)  # a checksum does not prove the weights can solve anything
    return optimizer, sha


def _read_spec(path):
    if path is None:
        return {}
    from metaphys.spec.files import read_spec_file
    return read_spec_file(path)


def _overrides(args, spec):
    spec = dict(spec)
    if args.frames is not None:
        spec["frames"] = args.frames
    if args.iterations is not None:
        spec["iterations_per_step"] = args.iterations
        if args.kind == "smoke":  # smoke: a fixed budget replaces the tolerance (cloth: Metamizer budget)
            spec["tol"] = None
    if args.tol is not None:
        spec["tol"] = args.tol
    if args.max_iterations is not None:
        spec["max_iterations"] = args.max_iterations
    if args.solver is not None:
        spec["solver"] = args.solver
    _flipbook_overrides(args, spec)
    return spec


_FLIPBOOK_OPTIONS = ("flipbook", "no_flipbook", "flipbook_cell", "flipbook_step", "flipbook_range", "flipbook_loop",
                     "flipbook_loop_mode", "flipbook_alpha", "flipbook_engine")


def _flipbook_overrides(args, spec: dict) -> None:
    """``--flipbook ROWSxCOLS`` and the other ``--flipbook-*`` options -> the spec's flipbook keys."""
    if args.flipbook is not None:
        spec["flipbook"] = True
        spec["flipbook_layout"] = list(args.flipbook)
    if args.no_flipbook:
        spec["flipbook"] = False
    for name in ("flipbook_cell", "flipbook_step", "flipbook_loop", "flipbook_loop_mode", "flipbook_alpha",
                 "flipbook_engine"):
        if getattr(args, name) is not None:
            spec[name] = getattr(args, name)
    if args.flipbook_range is not None:
        spec["flipbook_range"] = list(args.flipbook_range)


def _layout(text: str):
    """``8x8`` -> (8, 8) (rows x columns)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 8x8, got {text!r}")
    return int(parts[0]), int(parts[1])


def _frame_range(text: str):
    """``17:96`` -> (17, 96) (first and last frame numbers, inclusive)."""
    parts = text.split(":")
    try:
        first, last = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST:LAST frame numbers such as 17:96, got {text!r}") from None
    return first, last


def _check_args(args) -> None:
    """Command-line values argparse cannot check; ValueError names the option and what it accepts."""
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    from metaphys.spec.schema import MAX_GRID
    if args.size is not None and not 16 <= args.size <= MAX_GRID:
        raise ValueError(f"--size must be an integer from 16 (the optimizer's smallest grid) to {MAX_GRID}, "
                         f"got {args.size}")
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if args.max_iterations is not None and args.max_iterations < 1:
        raise ValueError(f"--max-iterations must be >= 1, got {args.max_iterations}")
    if args.tol is not None and not (args.tol > 0 and args.tol != float("inf")):
        raise ValueError(f"--tol must be a positive number, got {args.tol}")
    if args.force and args.resume:
        raise ValueError("--force and --resume contradict each other: --resume continues the bake in --out, "
                         "--force replaces it")
    if args.solver is not None and args.kind != "cloth":
        raise ValueError("--solver applies to cloth bakes only")
    used = [o for o in _FLIPBOOK_OPTIONS if getattr(args, o) not in (None, False)]
    if used and args.kind != "smoke":
        raise ValueError(f"--{used[0].replace('_', '-')} applies to smoke bakes only")
    if args.flipbook is not None and args.no_flipbook:
        raise ValueError("--flipbook and --no-flipbook contradict each other")
    if args.threads is not None and args.threads != "auto":
        if not args.threads.isdigit() or int(args.threads) < 1:
            raise ValueError(f"--threads must be an integer >= 1 or 'auto', got {args.threads!r}")
    _check_device(args.device)


def _check_device(device: str) -> None:
    import re
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device == "cpu":
        return
    if m is None:
        raise ValueError(f"--device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    import torch  # only a CUDA device needs torch to be checked
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                         f"CUDA build {torch.version.cuda or 'none'}); use --device cpu")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")


def _resolve_threads(requested, params) -> int:
    """auto: the sims' rule (``threads_for_grid``): 1 thread up to 96^2 cells (cloth: 63^2 vertices),
    all cores above."""
    if requested not in (None, "auto"):
        return int(requested)
    if params.get("threads") is not None:
        return int(params["threads"])
    # the sims' own rule, so a bake and ClothSim/SmokeSim(threads=None) agree
    from metaphys.sims.common import threads_for_grid
    cloth = not params.get("resolution")
    shape = params.get("resolution") or (params["rows"], params["cols"])
    if len(shape) == 3:  # SmokeSim3D's rule: depth x rows as the rows
        shape = (shape[0] * shape[1], shape[2])
    return int(threads_for_grid(int(shape[0]), int(shape[1]), cloth=cloth))


def _fail(args, msg: str, code: int) -> int:
    if args.progress == "json":
        print(json.dumps({"event": "error", "message": msg}), flush=True)
    print(f"metaphys bake: error: {msg}", file=sys.stderr)
    return code


def _bake_parameters(args) -> dict:
    """Options and spec checked and merged into the bake's parameters (ValueError naming the problem).
    Imports no engine: numpy only, so a usage error is reported at once."""
    _check_args(args)
    spec = _overrides(args, _read_spec(args.spec))
    from metaphys.spec.params import cloth_parameters, smoke_parameters
    if args.kind == "smoke":
        return smoke_parameters(spec, size=args.size or 128)
    return cloth_parameters(spec, size=args.size or 32)


def _output_notes(kind: str, fmt: str) -> list:
    """Files this machine cannot write for the bake, said before it starts (never skipped silently)."""
    from metaphys.io import usd
    if usd.usd_available():
        return []
    if kind == "cloth" and fmt != "usd":
        from metaphys.bake.cloth import usd_note
        return [usd_note()]
    if kind == "smoke":
        return [f"usd-core is not installed, so smoke.usda is not written (pip install '{usd.USD_REQUIREMENT}', "
                "see requirements.txt)"]
    return []


def cmd_bake(args) -> int:
    try:
        params = _bake_parameters(args)
    except ValueError as exc:  # SpecError, SpecFileError: before the engine is imported
        return _fail(args, str(exc), 2)
    # the engine (torch, the kernels) from here on
    from metaphys.bake.driver import BakeError, previous_settings, run_bake
    from metaphys.optim.weights import WeightsError
    try:
        # --resume without --format/--threads continues with what the bake recorded
        prev = previous_settings(args.out) if args.resume else {}
        fmt = args.format or prev.get("format") or "obj"
        for note in _output_notes(args.kind, fmt):
            print(f"metaphys bake: note: {note}", file=sys.stderr)
        threads_arg = args.threads if args.threads is not None else prev.get("threads")
        threads = _resolve_threads(threads_arg, params)
        import torch
        torch.set_num_threads(threads)
        optimizer, sha = _load_optimizer(args.weights, args.device, dims=len(params.get("resolution") or ()) or 2)
        if args.kind == "smoke":
            from metaphys.bake.smoke import make_smoke_sim, smoke_writer
            sim = make_smoke_sim(params, optimizer, device=args.device, threads=threads)
            writer = smoke_writer(args.out, params)   # 2-D or 3-D by the resolution
            manifest_params, settings = params, {"threads": threads, "device": args.device}
            from metaphys.sims.common import network_dtype_name
            if network_dtype_name(sim) is not None:   # bfloat16 for 3-D where the CPU has it (optim/fast.py)
                settings["network_dtype"] = network_dtype_name(sim)
        else:
            from metaphys.bake.cloth import ClothWriter, make_cloth_sim, manifest_parameters
            sim = make_cloth_sim(params, optimizer, device=args.device, threads=threads)
            writer = ClothWriter(args.out, params, fmt=fmt)
            manifest_params = manifest_parameters(params)
            settings = {"format": fmt, "threads": threads, "device": args.device}
    except (BakeError, ValueError, TypeError, WeightsError) as exc:
        return _fail(args, str(exc), 2)
    frames = int(params["frames"])
    t = time.time()
    try:
        manifest = run_bake(args.kind, sim, writer, args.out, frames, parameters=manifest_params, model_sha256=sha,
                            progress=args.progress, resume=args.resume, start_frame=params["start_frame"],
                            settings=settings, strict=args.strict, force=args.force)
    except KeyboardInterrupt:
        print(f"metaphys bake: cancelled; finished frames are kept in {args.out} (continue with --resume)",
              file=sys.stderr)
        return 130
    except BakeError as exc:
        return _fail(args, str(exc), exc.code)
    except ValueError as exc:
        return _fail(args, str(exc), 2)
    _report(args, manifest, frames, time.time() - t)
    return 0


def _report(args, manifest, frames: int, elapsed: float) -> None:
    """The end-of-bake lines: Newton-finished frames, and warnings for frames that missed the
    tolerance or the strain limit (also in manifest.json: summary, extra.warnings)."""
    s = manifest.summary()
    out = sys.stderr if args.progress == "json" else sys.stdout
    print(f"{args.kind} bake: {frames} frames in {elapsed:.1f} s -> {os.path.abspath(args.out)}", file=out)
    if args.kind == "cloth":
        line = f"  Newton stage finished {s['finished_by_newton']} of {s['frames']} frames"
        if s["max_strain"] is not None:
            line += f"; max strain {100 * s['max_strain']:.1f}% (frame {s['max_strain_frame']})"
        print(line, file=out)
    if s["guard_rejections"]:
        from metaphys.sims.common import guard_note
        print(f"  {guard_note(s['guard_rejections'])}", file=out)
    bad = s["not_converged"]
    if bad:
        print(f"metaphys bake: warning: {len(bad)} frame(s) missed the tolerance "
              f"{manifest.parameters.get('tol')}: frames {_frame_list(bad)} (--strict makes this an error)",
              file=sys.stderr)
    over = s["over_strain_limit"]
    if over:
        print(f"metaphys bake: warning: {len(over)} frame(s) exceed the strain limit "
              f"{100 * s['strain_limit']:g}%: frames {_frame_list(over)} (--strict makes this an error)",
              file=sys.stderr)


def _frame_list(frames, limit: int = 12) -> str:
    text = ", ".join(str(f) for f in frames[:limit])
    return text + (f" ... ({len(frames) - limit} more)" if len(frames) > limit else "")


def cmd_wedge(args) -> int:
    """Bake every variant of a wedge file (parameter ranges over a bake spec) on Ray (docs/wedges.md):
    each variant is this module's ``bake`` command run in a Ray worker into its own folder."""
    from metaphys.bake.wedge import WedgeError, expand, read_wedge, run_wedge, validate_variants
    try:
        if args.force and args.resume:
            raise WedgeError("--force and --resume contradict each other: --resume continues the wedge in --out, "
                             "--force bakes every variant again")
        for name in ("workers", "threads", "contact_size"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise WedgeError(f"--{name.replace('_', '-')} must be an integer >= 1, got {getattr(args, name)}")
        if args.weights and not os.path.isfile(args.weights):
            raise WedgeError(f"--weights {args.weights}: no such file")
        _check_device(args.device)
        wedge = expand(read_wedge(args.wedge))
        validate_variants(wedge)  # every variant, before Ray or the engine starts
        if args.list:
            for v in wedge.variants:
                print(f"{v.name}\t{v.label()}")
            return 0
        if args.out is None:
            raise WedgeError("--out is required (unless --list)")
        result = run_wedge(wedge, args.out, main, workers=args.workers, address=args.address, resume=args.resume,
                           force=args.force, threads=args.threads, device=args.device, weights=args.weights,
                           fmt=args.format, progress=args.progress, contact_frame=args.contact_frame,
                           contact_cell=args.contact_size)
    except (WedgeError, ValueError) as exc:
        print(f"metaphys wedge: error: {exc}", file=sys.stderr)
        return 2
    m = result.manifest
    out = sys.stderr if args.progress == "json" else sys.stdout
    counts = ", ".join(f"{n} {status}" for status, n in sorted(m["counts"].items()))
    print(f"{wedge.kind} wedge of {len(m['variants'])} variants: {counts} ({result.ran} run, {result.skipped} already "
          f"complete) in {result.elapsed_s:.1f} s -> {os.path.abspath(args.out)}", file=out)
    sheet = m.get("contact_sheet", {})
    if "error" in sheet:
        print(f"metaphys wedge: warning: no contact sheet: {sheet['error']}", file=sys.stderr)
    for e in m["variants"]:
        if e["status"] == "failed":
            print(f"metaphys wedge: variant {e['name']} failed: {e['error']} (log: {e['log']})", file=sys.stderr)
    if result.exit_code == 130:
        print("metaphys wedge: cancelled; finished variants are kept (continue with --resume)", file=sys.stderr)
    return result.exit_code


def cmd_demo(args) -> int:
    """Cloth and smoke bakes with defaults into ./out (shipped weights, CPU)."""
    out = args.out
    rc = 0
    # 48^2 smoke keeps the whole demo (cloth + smoke) within a few minutes on 2 CPU cores
    for kind, extra in (("cloth", []), ("smoke", ["--size", "48"])):
        # the demo's folders are its own: a second `make demo` replaces the first one's bakes
        argv = ["bake", kind, "--out", os.path.join(out, kind), "--progress",
                "bar" if sys.stderr.isatty() else "none", "--force"] + extra
        a = build_parser(train_options=False).parse_args(argv)
        rc = cmd_bake(a) or rc
        if rc:
            return rc
    print(f"demo done: cloth in {os.path.join(out, 'cloth')} (cloth.pc2, rest.obj, frames/, preview.gif), "
          f"smoke in {os.path.join(out, 'smoke')} (density/ .png .npz .vdb, smoke.usda, flipbook_*.png + flipbook.json, preview.gif)")
    return rc


def cmd_train(args) -> int:
    from metaphys.train.__main__ import run
    return run(args)


def cmd_export_weights(args) -> int:
    """Export a snapshot as the shipped TorchScript; the model card gathers the training recipe,
    steps, wall time and hardware from the run folder, and the snapshot's held-out scores."""
    import platform
    import torch
    from metaphys.optim.weights import (WeightsError, export_torchscript, is_torchscript, load_snapshot,
                                        model_from_snapshot, sha256_of)
    if os.path.exists(args.out) and not args.overwrite:  # shipped weights are replaced only on purpose
        print(f"metaphys export-weights: error: {args.out} already exists (sha256 {sha256_of(args.out)[:16]}...); "
              "pass --overwrite to replace it, or --out another path", file=sys.stderr)
        return 2
    if not os.path.isfile(args.source):
        print(f"metaphys export-weights: error: snapshot {args.source} not found", file=sys.stderr)
        return 2
    if is_torchscript(args.source):  # shipped weights again, with the network code of this version
        return _reexport_torchscript(args)
    run_dir = os.path.dirname(os.path.abspath(args.source))
    ckpt = os.path.join(run_dir, "checkpoint.pt")
    try:  # tensors and plain values only: a snapshot someone sends you cannot run code
        model, sd = model_from_snapshot(args.source), load_snapshot(args.source)
        c = load_snapshot(ckpt) if os.path.exists(ckpt) else None
    except WeightsError as exc:
        print(f"metaphys export-weights: error: {exc}", file=sys.stderr)
        return 2
    training = {"source": os.path.basename(args.source), "step": sd.get("step"), "elapsed_s": sd.get("elapsed"),
                "hardware": f"{platform.machine()} CPU, {os.cpu_count()} cores, 1 torch thread, torch {torch.__version__}",
                "optimizer": "AdamW, cosine-decayed lr, grad value clip, EMA of weights (the EMA is shipped)"}
    if c is not None:
        training["recipe"] = c.get("config")
        training["run_steps_total"] = c.get("step")
    if sd.get("averaged_from"):  # a weight average: its sources, not one snapshot's scores
        training["averaged_from"] = sd["averaged_from"]
        training["note"] = ("uniform average of the EMA snapshots listed in averaged_from "
                            "(metaphys average-snapshots); step = the last of them")
    scores = os.path.join(run_dir, "snapshots.jsonl")
    if os.path.exists(scores) and not sd.get("averaged_from"):
        with open(scores) as fh:
            recs = [json.loads(line) for line in fh]
        mine = [r for r in recs if r.get("step") == sd.get("step")]
        if mine:
            training["held_out_scores"] = {k: v.get("final") for k, v in mine[-1]["cases"].items()}
    meta = {"training": training}
    if args.metadata:
        with open(args.metadata) as fh:
            meta.update(json.load(fh))
    meta = export_torchscript(model, args.out, meta)
    print(f"wrote {args.out} (sha256 {meta['sha256'][:16]}...) and its metadata JSON")
    return 0


def _reexport_torchscript(args) -> int:
    """Re-export shipped TorchScript weights with this version's network code (the same parameters;
    e.g. after a change of the U-Net's forward): the model card is carried over, with the file it was
    re-exported from and why (``--reason``)."""
    from metaphys.optim.metamizer import MetamizerNet
    from metaphys.io.atomic import atomic_write_text
    from metaphys.optim.weights import (WeightsError, export_torchscript, load_metadata, load_state_dict_any,
                                        load_torchscript, metadata_path)
    try:  # checksum verified against its JSON: re-exporting a damaged or swapped file is refused
        load_torchscript(args.source, verify=True)
        card = load_metadata(args.source)
        sd = load_state_dict_any(args.source)
    except WeightsError as exc:
        print(f"metaphys export-weights: error: {exc}", file=sys.stderr)
        return 2
    if not args.reason:
        print("metaphys export-weights: error: re-exporting TorchScript weights needs --reason (what changed in "
              "the network code), recorded in the model card", file=sys.stderr)
        return 2
    if "unet.inc.block.0.weight" not in sd:
        print(f"metaphys export-weights: error: {args.source} is TorchScript but not Metamizer weights (no "
              "unet.inc.block.0.weight; a solver module? re-export its weights, then `metaphys export-solver`)",
              file=sys.stderr)
        return 2
    weight = sd["unet.inc.block.0.weight"]
    model = MetamizerNet(hidden=int(weight.shape[0]), padding_mode=card.get("padding_mode", "zeros"),
                         dims=weight.dim() - 2)
    model.load_state_dict(sd)
    model.eval()
    previous = {"file": os.path.basename(args.source), "sha256": card.get("sha256"), "reason": args.reason}
    keep = {k: v for k, v in card.items()
            if k not in ("sha256", "format", "contract", "architecture", "parameters", "reexported_from")}
    keep["reexported_from"] = [previous] + list(card.get("reexported_from") or [])
    if args.metadata:
        with open(args.metadata) as fh:
            keep.update(json.load(fh))
    meta = export_torchscript(model, args.out, keep)
    # the card keeps its own order of fields (a re-export's diff shows what changed, not a reordering)
    ordered = {k: meta[k] for k in card if k in meta}
    ordered.update({k: v for k, v in meta.items() if k not in ordered})
    atomic_write_text(metadata_path(args.out), json.dumps(ordered, indent=1))
    print(f"wrote {args.out} (sha256 {meta['sha256'][:16]}..., re-exported from {previous['sha256'][:16]}...) "
          "and its metadata JSON")
    return 0


def cmd_average_snapshots(args) -> int:
    """Average EMA snapshots of one run (by file, or by a step range of a run folder)."""
    from metaphys.train.average import AverageError, average_snapshots, snapshots_between
    try:
        if args.steps:
            if not args.run or args.snapshots:
                raise AverageError("--steps FIRST:LAST needs --run RUN_DIR and no snapshot files")
            try:
                first, last = (int(x) for x in args.steps.split(":"))
            except ValueError:
                raise AverageError(f"--steps {args.steps!r}: expected FIRST:LAST, two integers, e.g. 29547:38341")
            paths = snapshots_between(args.run, first, last)
        elif args.run:
            raise AverageError("--run RUN_DIR needs --steps FIRST:LAST (or give the snapshot files instead)")
        else:
            paths = args.snapshots
        if os.path.exists(args.out) and not args.overwrite:
            raise AverageError(f"{args.out} already exists; pass --overwrite to replace it")
        result = average_snapshots(paths, args.out)
    except AverageError as exc:
        print(f"metaphys average-snapshots: error: {exc}", file=sys.stderr)
        return 2
    steps = [s["step"] for s in result["averaged_from"]]
    print(f"wrote {args.out}: uniform average of {len(steps)} snapshots (steps {steps[0]}..{steps[-1]})")
    return 0


def cmd_export_onnx(args) -> int:
    from metaphys.optim.onnx_export import export_onnx
    export_onnx(args.weights, args.out, opset=args.opset)
    print(f"wrote {args.out}")
    return 0


def cmd_export_solver(args) -> int:
    """The whole iteration (network, acceleration, guard, tolerance stop) as one TorchScript module."""
    from metaphys.optim.scripted_solver import export_solver
    from metaphys.optim.weights import WeightsError
    try:
        meta = export_solver(args.out, args.weights)
    except WeightsError as exc:
        print(f"metaphys export-solver: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (sha256 {meta['sha256'][:16]}..., wraps {meta['wraps']['file']} "
          f"{meta['wraps']['sha256'][:16]}...) and its metadata JSON")
    return 0


def cmd_eval(args) -> int:
    from metaphys.eval.harness import main as eval_main
    from metaphys.optim.weights import WeightsError
    from metaphys.eval.harness import EvalInputError
    try:
        return eval_main(args)
    except (WeightsError, EvalInputError) as exc:  # bad --weights / --out / --merge: the message names it
        print(f"metaphys eval: error: {exc}", file=sys.stderr)
        return 2


def build_parser(train_options: bool = True) -> argparse.ArgumentParser:
    """The command line. ``train_options=False`` leaves out the options of ``train``, which come from
    metaphys.train and so import torch: ``main`` adds them only when the command is ``train``."""
    p = argparse.ArgumentParser(prog="metaphys", description="Physics simulation with a learned neural optimizer")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bake", help="bake a cloth or smoke simulation to files (docs/bake-spec.md)")
    b.add_argument("kind", choices=["cloth", "smoke"])
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--spec", help="JSON spec file (docs/bake-spec.md); options below override it")
    b.add_argument("--frames", type=int, help="number of frames")
    b.add_argument("--size", type=int, help="grid size (cloth vertices per side / smoke cells per side)")
    b.add_argument("--format", choices=["obj", "ply", "glb", "usd", "none"],
                   help="cloth mesh format per frame (default obj; --resume: the bake's own); cloth.usdc is "
                        "written whenever usd-core is installed, usd = cloth.usdc without per-frame meshes")
    b.add_argument("--iterations", type=int, help="optimizer iterations per time step (cloth: the Metamizer budget)")
    b.add_argument("--tol", type=float, help="stop each step when the residual is below TOL")
    b.add_argument("--max-iterations", type=int, help="iteration cap per step with --tol")
    b.add_argument("--solver", choices=["auto", "metamizer", "newton"],
                   help="cloth: auto = Metamizer then a Newton finishing stage when above --tol (default: the spec's)")
    f = b.add_argument_group("smoke game flipbook (docs/flipbooks.md; the spec's flipbook_* keys)")
    f.add_argument("--flipbook", type=_layout, metavar="ROWSxCOLS",
                   help="sheet layout, e.g. 8x8 (the default; the flipbook is written unless --no-flipbook)")
    f.add_argument("--no-flipbook", action="store_true", help="write no game flipbook")
    f.add_argument("--flipbook-cell", type=int, metavar="PIXELS",
                   help="cell size along the domain's longer side (default: the grid's)")
    f.add_argument("--flipbook-step", type=int, metavar="K", help="every K-th frame (default: fit the range)")
    f.add_argument("--flipbook-range", type=_frame_range, metavar="FIRST:LAST",
                   help="baked frame numbers the sheet is taken from (default: all)")
    f.add_argument("--flipbook-loop", type=int, metavar="L",
                   help="seamless loop of L frames (default 0: none): see --flipbook-loop-mode")
    f.add_argument("--flipbook-loop-mode", choices=["crossfade", "two_phase"],
                   help="two_phase (default): the frames blended with themselves half a loop later, L-frame "
                        "ramps at the seam, no extra frames; crossfade: the last L selected frames fade into the "
                        "first L (docs/flipbooks.md)")
    f.add_argument("--flipbook-alpha", choices=["straight", "premultiplied"], help="default straight")
    f.add_argument("--flipbook-engine", choices=["unity", "unreal"],
                   help="green axis of motion vectors and normals: unity = +v up (default), unreal = +v down")
    b.add_argument("--strict", action="store_true",
                   help="a frame that misses the tolerance or the strain limit is an error (exit 1; it is not "
                        "written, finished frames are kept)")
    b.add_argument("--progress", default="bar", choices=["bar", "json", "none"])
    b.add_argument("--resume", action="store_true", help="continue an interrupted bake in OUT (or extend it)")
    b.add_argument("--force", action="store_true",
                   help="bake into a non-empty OUT: first remove the previous bake's outputs (only files a "
                        "metaphys bake wrote; without --force a non-empty OUT is refused)")
    b.add_argument("--device", default="cpu", help="cpu or cuda")
    b.add_argument("--threads", help="CPU threads: an integer >= 1 or auto (default: the spec's, else auto = 1 "
                                     "for grids up to 96^2; --resume: the bake's own)")
    b.add_argument("--weights", help="Metamizer TorchScript weights (default weights/metamizer.pt)")
    b.set_defaults(func=cmd_bake)

    wg = sub.add_parser("wedge", help="bake variants of a spec (parameter ranges, seeds) on Ray (docs/wedges.md)")
    wg.add_argument("wedge", help="wedge JSON file: kind, base spec, parameters (dotted spec keys -> values)")
    wg.add_argument("--out", help="wedge folder: one bake folder per variant, wedge.json, contact_sheet.png")
    wg.add_argument("--workers", type=int, help="CPUs of the local Ray instance (default: all cores)")
    wg.add_argument("--address", help="an existing Ray cluster (host:6379, auto, or ray://host:10001 with ray[client]; "
                                      "its token from RAY_AUTH_TOKEN(_PATH) or ~/.ray/auth_token; OUT must be "
                                      "on a filesystem every node mounts at the same path)")
    wg.add_argument("--threads", type=int, help="torch threads per variant, and the CPUs its Ray task asks for "
                                                "(default 1; --resume: the wedge's own)")
    wg.add_argument("--resume", action="store_true", help="bake only the unfinished variants (each continues "
                                                          "with the bake's --resume)")
    wg.add_argument("--force", action="store_true", help="bake every variant again into a non-empty OUT")
    wg.add_argument("--list", action="store_true", help="print the variants (validated) and exit")
    wg.add_argument("--format", choices=["obj", "ply", "glb", "usd", "none"], help="cloth mesh format per frame")
    wg.add_argument("--contact-frame", type=int, metavar="N",
                    help="frame number the contact sheet shows (default: each variant's last)")
    wg.add_argument("--contact-size", type=int, default=192, metavar="PIXELS", help="contact sheet cell size")
    wg.add_argument("--progress", default="bar", choices=["bar", "json", "none"])
    wg.add_argument("--device", default="cpu", help="cpu or cuda (every variant)")
    wg.add_argument("--weights", help="Metamizer TorchScript weights (default weights/metamizer.pt)")
    wg.set_defaults(func=cmd_wedge)

    d = sub.add_parser("demo", help="bake the default cloth and smoke scenes into ./out")
    d.add_argument("--out", default="out")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train the Metamizer (resumable)")
    if train_options:
        from metaphys.train.__main__ import build_parser as train_parser
        train_parser(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate weights on held-out problems (writes benchmarks/results/eval.md)")
    e.add_argument("--weights", help="TorchScript weights or a training snapshot (default weights/metamizer.pt)")
    e.add_argument("--out", default=os.path.join("benchmarks", "results", "eval.md"),
                   help="the report (.md; its .json and .png beside it), or a folder to write eval.md into")
    e.add_argument("--quick", action="store_true", help="small sizes and few iterations (CI)")
    e.add_argument("--only", help="comma-separated case families or names (laplace, laplace100, diffusion, ...)")
    e.add_argument("--merge", nargs="+", metavar="PART_JSON",
                   help="write one report from the .json files of partial runs (--only, e.g. one per core) of "
                        "the same --weights, instead of evaluating")
    e.set_defaults(func=cmd_eval)

    w = sub.add_parser("export-weights", help="export a training snapshot as the TorchScript weights contract")
    w.add_argument("source", help="EMA snapshot or checkpoint (runs/*/best.pt), or shipped TorchScript weights to "
                                  "re-export with this version's network code (needs --reason)")
    w.add_argument("--out", default=os.path.join("weights", "metamizer.pt"))
    w.add_argument("--metadata", help="JSON file with extra model-card fields")
    w.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    w.add_argument("--reason", help="source is TorchScript weights (re-export with this version's network code): "
                                    "what changed, recorded in the model card")
    w.set_defaults(func=cmd_export_weights)

    a = sub.add_parser("average-snapshots", help="average EMA snapshots of one training run (weight averaging)")
    a.add_argument("snapshots", nargs="*", help="EMA snapshot files (training/cpu/ema_step*.pt)")
    a.add_argument("--run", help="run folder to take the snapshots from (with --steps)")
    a.add_argument("--steps", help="FIRST:LAST, every snapshot of --run with a step in this range")
    a.add_argument("--out", required=True, help="averaged snapshot to write (then metaphys export-weights it)")
    a.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    a.set_defaults(func=cmd_average_snapshots)

    o = sub.add_parser("export-onnx", help="export the weights to ONNX for game engines (needs `onnx`)")
    o.add_argument("--weights", help="TorchScript weights (default weights/metamizer.pt)")
    o.add_argument("--out", default="metamizer.onnx")
    o.add_argument("--opset", type=int, default=17)
    o.set_defaults(func=cmd_export_onnx)

    x = sub.add_parser("export-solver", help="export the whole solver loop as TorchScript for C++ and game engines")
    x.add_argument("--weights", help="TorchScript weights to wrap (default weights/metamizer.pt)")
    x.add_argument("--out", default=os.path.join("weights", "metamizer_solver.pt"))
    x.set_defaults(func=cmd_export_solver)
    return p


def main(argv=None) -> int:
    """Parse, then run the command; the engine (torch) is imported only by the command that needs it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level has no other options
    args = build_parser(train_options=command == "train").parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
