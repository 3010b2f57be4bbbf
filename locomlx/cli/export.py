"""`locomlx fuse` and `locomlx export`: an adapter for the tools students already run (locomlx/export)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from locomlx.cli.options import adapters_dir_option, base_model_option, library_path
from locomlx.errors import LocomlxError

import click


def _base_gguf(reference: str) -> Path | None:
    """The base model's own GGUF file (the embedded one, or a .gguf given as --base-model), if it has one."""
    from locomlx.models.resolve import builtin_gguf_path

    if reference.endswith(".gguf"):
        return Path(reference).resolve()
    try:
        return builtin_gguf_path(reference)
    except LocomlxError:
        return None


@click.command()
@click.argument("adapter")
@click.option("--output", default=None, metavar="DIR", help="Where to write the fused model [fused/ADAPTER].")
@click.option("--dequantize/--requantize", "keep_float", default=True, show_default=True,
              help="Keep the fused layers in float (default), or put them back on the base's 4-bit grid, "
                   "where a small update can round away.")
@click.option("--strict", is_flag=True, help="Exit 2 when the fused model lost the adapter's effect.")
@base_model_option
@adapters_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the check as JSON.")
def fuse(adapter, output, keep_float, strict, base_model, adapters_dir, as_json):
    """Merge ADAPTER (or a composition a:0.7+b:0.3) into the base model: an mlx-lm model directory.

    Then a few of the adapter's benchmark questions go through the fused and the unfused model: the
    largest next-token logit difference, whether greedy answers agree, and whether re-quantizing
    erased the adapter's effect are printed.

    \b
    Examples:
      locomlx fuse sentiment-rt                     # fused/sentiment-rt, loads in mlx_lm.load / mlx_lm.generate
      locomlx fuse sentiment-rt --requantize --strict
      locomlx fuse "sentiment-rt:0.7+spam-assassin:0.3" --output fused/mix
    """
    from locomlx.export.fuse import check_fused, check_prompts, fuse_adapter

    library = library_path(adapters_dir)
    target = Path(output or Path("fused") / adapter.replace(":", "_").replace("+", "__"))
    fuse_adapter(adapter, library, target, base_model, requantize=not keep_float)
    check = check_fused(adapter, library, target, check_prompts(adapter, library), base_model)
    if as_json:
        click.echo(json.dumps({"output": str(target), **check.to_dict()}, indent=2))
    else:
        click.echo(f"wrote {target} (mlx-lm model directory; fused layers {'float' if keep_float else 're-quantized'})")
        click.echo(f"check on {check.prompts} prompts: largest logit difference {check.max_logit_difference:.2e}, "
                   f"greedy answers agree on {check.greedy_agree}/{check.prompts}")
    if check.erased:
        click.secho(f"warning: the fused model's logits miss the adapter's by up to {check.max_logit_difference:.3f}, "
                    f"while the adapter moves them by {check.adapter_effect:.3f} from the base: re-quantizing erased "
                    "most of its effect. Fuse with --dequantize (the default).", fg="yellow", err=True)
        if strict:
            sys.exit(2)


@click.command("export")
@click.argument("adapter")
@click.option("--format", "fmt", type=click.Choice(["peft", "gguf"]), required=True,
              help="peft: Hugging Face PEFT folder; gguf: llama.cpp LoRA + an Ollama Modelfile.")
@click.option("--output", default=None, metavar="PATH", help="Folder to write [exports/ADAPTER-FORMAT].")
@click.option("--fused", is_flag=True, help="gguf: the whole model with the adapter merged in, one GGUF (the base's "
                                            "GGUF with the fused layers in float16), for runtimes without LoRA.")
@base_model_option
@adapters_dir_option
def export_command(adapter, fmt, output, fused, base_model, adapters_dir):
    """Write ADAPTER for another runtime; the library stays as it is (exports are derived files).

    \b
    Examples:
      locomlx export sentiment-rt --format peft     # PeftModel.from_pretrained(base, "exports/sentiment-rt-peft")
      locomlx export sentiment-rt --format gguf     # llama-cli -m BASE.gguf --lora ...; ollama create -f Modelfile
      locomlx export sentiment-rt --format gguf --fused   # one GGUF with the adapter merged in
    """
    from locomlx.adapters.format import read_adapter
    from locomlx.adapters.library import find_adapter
    from locomlx.models.resolve import resolve_model

    library = library_path(adapters_dir)
    source = read_adapter(find_adapter(adapter, library), adapter)
    target = Path(output or Path("exports") / f"{source.name}-{fmt}")
    resolved = resolve_model(base_model)
    config = json.loads((resolved.path / "config.json").read_text())
    if fmt == "peft":
        from locomlx.export.peft import export_peft

        export_peft(source, target, config.get("_name_or_path") or resolved.reference)
        click.echo(f"wrote {target} (PEFT LoRA: adapter_config.json, adapter_model.safetensors)")
        return
    from locomlx.export.gguf import export_fused_gguf, export_gguf_lora, modelfile

    template = json.loads((resolved.path / "tokenizer_config.json").read_text()).get("chat_template") \
        if (resolved.path / "tokenizer_config.json").is_file() else None
    base_gguf = _base_gguf(resolved.reference)
    if fused:
        if base_gguf is None:
            raise LocomlxError("--fused copies the base model's GGUF (its metadata and tokenizer); this base was not "
                               "given as a GGUF. Export the LoRA instead (--format gguf without --fused).")
        import tempfile

        from locomlx.export.fuse import fuse_adapter

        with tempfile.TemporaryDirectory(prefix="locomlx-fuse-") as work:
            merged = fuse_adapter(adapter, library, Path(work) / "fused", base_model)
            model = export_fused_gguf(merged, base_gguf, target / f"{source.name}.fused.gguf")
        (target / "Modelfile").write_text(modelfile(model.resolve(), None, template))
        click.echo(f"wrote {model} (float16 GGUF, adapter merged in) and {target / 'Modelfile'}")
        return
    lora = export_gguf_lora(source, target / f"{source.name}.lora.gguf", config)
    (target / "Modelfile").write_text(modelfile(base_gguf, lora, template))
    click.echo(f"wrote {lora} (llama.cpp LoRA) and {target / 'Modelfile'} (ollama create NAME -f Modelfile)")
