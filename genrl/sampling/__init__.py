"""Sampling: pure tensor steps of flow-matching samplers viewed as Gaussian policies."""

from .steps import STEP_TYPES, StepOutput, cps_step, ddim_step, flow_step, ode_step, sde_step, wan_sde_step

__all__ = ["STEP_TYPES", "StepOutput", "cps_step", "ddim_step", "flow_step", "ode_step", "sde_step", "wan_sde_step"]
