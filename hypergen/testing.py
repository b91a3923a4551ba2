"""Tiny stand-ins for tests and quick demos: a random tiny Llama with a byte-level chat tokenizer.

The tiny model has the same module names as SmolLM2 (model.layers.N.self_attn.q_proj ...), so every
code path (peft keys, slots, swaps, training) runs as on the real base, in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tiny_tokenizer():
    """Byte-level BPE with no merges (256 byte tokens + ChatML specials): needs no training data."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",  # as in SmolLM2: pad == eos, so labels must be built explicitly
        unk_token="<|endoftext|>",
        chat_template=CHATML,
    )


def make_tiny_llama(folder: str | Path, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Write a random tiny Llama + tokenizer folder that `load_base(folder)` loads like a real one."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tok = make_tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention as in SmolLM2: v_proj is narrower than q_proj
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def smollm2_bank(n: int = 4, seed: int = 0):
    """A synthetic ExpertBank with SmolLM2-135M's LoRA layout (30 layers, q_proj 576->576, v_proj 576->192,
    rank 8; 460,800 weights): generator sizes and speeds at real scale without a real zoo."""
    import torch

    from hypergen.generators import ExpertBank, Layout

    paths, a, b = [], [], []
    for i in range(30):
        for m, out in (("q_proj", 576), ("v_proj", 192)):
            paths.append(f"model.layers.{i}.self_attn.{m}")
            a.append((8, 576))
            b.append((out, 8))
    layout = Layout(tuple(paths), tuple(a), tuple(b), 16.0)
    g = torch.Generator().manual_seed(seed)
    flat = 0.02 * torch.randn(n, layout.numel, generator=g)
    traj = [torch.stack([f + 1e-3 * torch.randn(layout.numel, generator=g), f]) for f in flat]
    e = torch.nn.functional.normalize(torch.randn(n, 384, generator=g), dim=1)
    return ExpertBank([f"expert{i}" for i in range(n)], e, [v[None] for v in e], flat, traj, layout, {"base_model": "SmolLM2-135M-Instruct"})


# ---- driving the Streamlit app in a browser (tests/test_app_browser.py, bench/app_screenshot.py) ----
def app_healthy(url: str, proc=None, timeout: float = 120.0) -> bool:
    """Wait until a served app answers its health check; False on timeout or when `proc` exits."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def headless_chromium(chromium: str, chromedriver: str, profile: str | None = None, window: str = "1400,1500"):
    """A selenium driver for Debian's headless chromium, with a throwaway profile (`profile`: a folder the
    caller removes; default a new temporary one) and no network chatter."""
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--window-size={window}",
                 f"--user-data-dir={profile or tempfile.mkdtemp(prefix='hypergen-chromium-')}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=opts)
