"""Can the toy audio VAE's decoder synthesise every pitch of the world's grid, given the pitch? A loss probe.

    python bench/toy_audio_oracle_decoder.py --steps 1500 --loss l1      # waveform L1 alone
    python bench/toy_audio_oracle_decoder.py --steps 1500 --loss mel     # the VAE recipe's mel + 2 x L1
    python bench/toy_audio_oracle_decoder.py --steps 1500 --loss stft    # linear-magnitude multi-resolution STFT + 2 x L1

A freshly initialised Oobleck decoder (the pipeline's ``vae_config``) is trained alone, without an encoder, to
decode an oracle latent, held still over the clip (cosine and sine of the phase, and a fixed random code of the
harmonic number), into a steady sine at that grid pitch (every harmonic 4-31 of 40 Hz, random phase, amplitude
0.5). Then each pitch at four phases is decoded and read by the peak of its spectrum: the share returned at its
own pitch and the signal-to-error ratio. High here and low in the autoencoder says the decoder can draw the pitch
and the loss or the encoder keeps it from learning to.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--loss", choices=("l1", "mel", "stft"), default="l1")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps={args.steps} must be >= 1")

    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderOobleck

    from genrl.toy.audio_pipeline import LATENT_CHANNELS, VAE_HOP, vae_config
    from genrl.toy.pretrain_audio import multiresolution_stft_loss, multiscale_mel_loss
    from rewards.toyaudio.world import PITCH_GRID_HZ, REGISTERS, SAMPLE_RATE

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    decoder = AutoencoderOobleck(**vae_config()).decoder
    harmonics = np.arange(REGISTERS["low"].start, REGISTERS["high"].stop)
    code = torch.randn(len(harmonics), LATENT_CHANNELS - 2, generator=torch.Generator().manual_seed(1))
    code = code / code.norm(dim=1, keepdim=True) * 3
    frames = 10
    t = torch.arange(frames * VAE_HOP)

    def latent(index: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        z = torch.cat([torch.cos(phase)[:, None], torch.sin(phase)[:, None], code[index]], 1)
        return z[:, :, None].expand(len(index), LATENT_CHANNELS, frames).contiguous()

    def sine(index: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        freq = torch.from_numpy(harmonics)[index].float() * PITCH_GRID_HZ
        return 0.5 * torch.sin(2 * math.pi * freq[:, None] * t[None] / SAMPLE_RATE + phase[:, None])

    opt = torch.optim.AdamW(decoder.parameters(), lr=1e-3)
    gen, start = torch.Generator().manual_seed(2), time.time()
    for step in range(args.steps):
        index = torch.randint(len(harmonics), (16,), generator=gen)
        phase = torch.rand(16, generator=gen) * 2 * math.pi
        target, recon = sine(index, phase)[:, None], decoder(latent(index, phase))
        loss = F.l1_loss(recon, target)
        if args.loss == "mel":
            loss = multiscale_mel_loss(recon, target) + 2 * loss
        elif args.loss == "stft":
            loss = multiresolution_stft_loss(recon, target) + 2 * loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt.step()
        if step % 200 == 0:
            print(json.dumps({"step": step, "loss": round(loss.item(), 4)}), flush=True)
    own, snr = [], []
    with torch.no_grad():
        for i in range(len(harmonics)):
            index = torch.full((4,), i)
            phase = torch.arange(4) * math.pi / 2
            inner = slice(2 * VAE_HOP, (frames - 2) * VAE_HOP)  # away from the crop's edges
            recon = decoder(latent(index, phase))[:, 0, inner].numpy()
            target = sine(index, phase)[:, inner].numpy()
            for r, x in zip(recon, target, strict=True):
                spectrum = np.abs(np.fft.rfft(r * np.hanning(len(r)), 1 << 15))
                peak = np.argmax(spectrum) * SAMPLE_RATE / (1 << 15)
                own.append(abs(peak - harmonics[i] * PITCH_GRID_HZ) < PITCH_GRID_HZ / 2)
                snr.append(10 * np.log10((x ** 2).mean() / ((r - x) ** 2).mean()))
    print(json.dumps({"steps": args.steps, "loss": args.loss, "own_pitch": float(np.mean(own)),
                      "snr_db": round(float(np.mean(snr)), 2), "seconds": round(time.time() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
