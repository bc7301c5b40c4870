"""``crackseg info``: show a model's card."""

from __future__ import annotations

DESCRIPTION = ("Print a model directory's card: dimensionality, label schema, architecture, "
               "normalisation, window, held-out metrics, training data and parent. The weights "
               "are verified against the card's SHA-256 unless --no-verify is given.")


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="show a model's card", description=DESCRIPTION)
    p.add_argument("model", nargs="?", default=None,
                   help="model directory or shipped model name (default: the default model)")
    p.add_argument("--json", action="store_true", help="print the whole card as JSON")
    p.add_argument("--no-verify", action="store_true", help="do not load and verify the weights")
    p.set_defaults(func=run)


def card_summary(card: dict) -> str:
    """Human-readable summary of a model card."""
    a = card["architecture"]["args"]
    s = card["schema"]
    lines = [
        f"model:          {card.get('name')}  (format {card.get('format_version')}, "
        f"crackseg {card.get('crackseg_version')})",
        f"description:    {card.get('description') or '-'}",
        f"input:          {card['spatial_dims']}-D, {a.get('in_channels', 1)} channel",
        f"classes:        {s['name']}: " + ", ".join(f"{k}={v}" for k, v in s["classes"].items())
        + f" (ignore {s.get('ignore', 255)})",
        f"architecture:   {card['architecture']['name']} channels={a['channels']} "
        f"strides={a['strides']} res_units={a['num_res_units']} dropout={a['dropout']} norm={a['norm']}",
        f"normalization:  {card['normalization'].get('method')} {card['normalization'].get('mode')} "
        f"{card['normalization'].get('percentiles')}"
        + (f" reference {card['normalization']['reference']}" if card["normalization"].get("reference") else ""),
        f"window:         {card.get('inference', {}).get('roi_size')} overlap "
        f"{card.get('inference', {}).get('overlap')}",
        f"weights sha256: {card.get('weights_sha256')}",
    ]
    m = card.get("metrics") or {}
    if m.get("dice"):
        lines.append("held-out Dice:  " + ", ".join(
            f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in m["dice"].items())
            + (f"  ({m['description']})" if m.get("description") else ""))
    data = (card.get("training") or {}).get("data") or {}
    if data:
        lines.append(f"trained on:     {data.get('source')}"
                     + (f" {data.get('synthetic')}" if data.get("synthetic") else ""))
    if (card.get("training") or {}).get("reproduce"):
        lines.append(f"reproduce:      {card['training']['reproduce']}")
    if card.get("parent"):
        p = card["parent"]
        lines.append(f"parent:         {p.get('name')} (weights {str(p.get('weights_sha256'))[:16]}...)")
    return "\n".join(lines)


def run(args) -> int:
    import json

    from crackseg.model_io import load_model, read_card, resolve_model_path

    path = resolve_model_path(args.model)
    if args.no_verify:
        card = read_card(path)
    else:
        _, card = load_model(path)
    print(json.dumps(card, indent=2) if args.json else f"path:           {path}\n{card_summary(card)}")
    return 0
