"""The toy video world: 9-frame 32 x 32 clips of the image world's shapes moving (``world``), prompts in five
families and their splits (``prompts``), the renderer (``render``) and the tracking verifier (``verifier``).
numpy and scipy only, like :mod:`rewards.toyworld`."""

from pathlib import Path

from .prompts import all_specs, spec_from_prompt, split
from .render import Track, layout_clip, render_batch, render_clip, render_tracks
from .verifier import clip_requirements, verify_clip
from .world import FPS, NUM_FRAMES, VIDEO_FAMILIES, MoverSpec, VideoSpec, video_vocabulary

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
#: the shipped toy video-text model (:class:`rewards.video_text.VideoTextModel` and its tokenizer)
TOY_VIDEO_TEXT_DIR = ASSETS_DIR / "toy-video-text"
#: the shipped OT map of the PISCES quality reward on the toy video-text model's embeddings
TOY_OT_MAP_DIR = ASSETS_DIR / "toy-ot-map"

__all__ = ["ASSETS_DIR", "FPS", "NUM_FRAMES", "TOY_OT_MAP_DIR", "TOY_VIDEO_TEXT_DIR", "VIDEO_FAMILIES", "MoverSpec",
           "Track", "VideoSpec", "all_specs", "clip_requirements", "layout_clip", "render_batch", "render_clip",
           "render_tracks", "spec_from_prompt", "split", "verify_clip", "video_vocabulary"]
