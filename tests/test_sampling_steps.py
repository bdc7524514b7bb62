import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from genrl.sampling import cps_step, ddim_step, flow_step, ode_step, sde_step, wan_sde_step

B, SHAPE = 3, (3, 4, 5, 5)


def _xv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


def _velocity(x, sigma):
    return torch.tanh(x) * (1 + sigma)  # any smooth deterministic stand-in for a model


def test_sde_step_matches_independent_sde_discretisation():
    x, v = _xv()
    sigma, sigma_next, a = 0.7, 0.55, 0.7
    out = sde_step(x, v, sigma, sigma_next, a, generator=torch.Generator().manual_seed(1))
    # Independent computation in float64: drift of dx = [v + std_t^2/(2 t) (x + (1 - t) v)] dt + std_t dw.
    xd, vd = x.double(), v.double()
    std_t = a * math.sqrt(sigma / (1 - sigma))
    dt = sigma_next - sigma
    mean = xd + (vd + std_t**2 / (2 * sigma) * (xd + (1 - sigma) * vd)) * dt
    std = std_t * math.sqrt(-dt)
    torch.testing.assert_close(out.mean.double(), mean, rtol=1e-5, atol=1e-6)
    assert out.std.item() == pytest.approx(std, rel=1e-6)
    expected = torch.distributions.Normal(mean, std).log_prob(out.prev_sample.double()).mean(dim=(1, 2, 3))
    assert out.log_prob.shape == (SHAPE[0],)
    torch.testing.assert_close(out.log_prob.double(), expected, rtol=1e-5, atol=1e-5)


def test_wan_sde_step_has_a_diffusion_coefficient_linear_in_sigma():
    # Flow-GRPO's Wan2.1 step: std_t = sigma_min + (sigma_max - sigma_min) sigma, with sigma_max the
    # schedule's second value and sigma_min its last; the same drift as the SD3 SDE step; 5-D video latents.
    x = torch.randn(2, 4, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    v = torch.tanh(x)
    sigma, sigma_next, sigma_max = 0.8, 0.6, 0.95
    out = wan_sde_step(x, v, sigma, sigma_next, sigma_max=sigma_max, sigma_min=0.0,
                       generator=torch.Generator().manual_seed(4))
    xd, vd = x.double(), v.double()
    std_t, dt = sigma_max * sigma, sigma_next - sigma
    mean = xd + (vd + std_t**2 / (2 * sigma) * (xd + (1 - sigma) * vd)) * dt
    std = std_t * math.sqrt(-dt)
    torch.testing.assert_close(out.mean.double(), mean, rtol=1e-5, atol=1e-6)
    assert out.std.item() == pytest.approx(std, rel=1e-6)
    expected = torch.distributions.Normal(mean, std).log_prob(out.prev_sample.double()).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(out.log_prob.double(), expected, rtol=1e-5, atol=1e-5)
    # it is the SD3 step with std_t swapped; at sigma = 1 no sigma_max stand-in is needed
    same = flow_step("wan_sde", x, v, 1.0, 0.9, 1.0, sigma_max=0.9, prev_sample=out.prev_sample)
    assert torch.isfinite(same.log_prob).all()
    with pytest.raises(ValueError, match="sigma_max"):
        flow_step("wan_sde", x, v, sigma, sigma_next, 1.0)


def test_sde_step_at_sigma_one_uses_sigma_max():
    x, v = _xv()
    out = sde_step(x, v, 1.0, 0.9, 0.7, sigma_max=0.9, generator=torch.Generator().manual_seed(0))
    std_t = 0.7 * math.sqrt(1.0 / (1 - 0.9))
    assert out.std.item() == pytest.approx(std_t * math.sqrt(0.1), rel=1e-6)
    assert torch.isfinite(out.log_prob).all()


def test_cps_step_formulas():
    x, v = _xv(2)
    sigma, sigma_next, a = 0.8, 0.6, 0.8
    out = cps_step(x, v, sigma, sigma_next, a, generator=torch.Generator().manual_seed(3))
    s = sigma_next * math.sin(a * math.pi / 2)
    x0, x1 = x - sigma * v, x + (1 - sigma) * v
    torch.testing.assert_close(out.mean, (1 - sigma_next) * x0 + math.sqrt(sigma_next**2 - s**2) * x1)
    assert float(out.std) == pytest.approx(s)
    torch.testing.assert_close(out.log_prob, -((out.prev_sample - out.mean) ** 2).mean(dim=(1, 2, 3)))
    full = cps_step(x, v, sigma, sigma_next, 1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(full.mean, (1 - sigma_next) * x0, atol=1e-6, rtol=1e-6)
    assert float(full.std) == pytest.approx(sigma_next)


def test_ddim_step_is_the_ve_first_order_dpm_solver_update_in_flow_coordinates():
    # Independent computation in VE units (x_ve = x0 + sigma eps, sigma_ve = s / (1 - s), x_ve = x / (1 - s)),
    # float64: eta = 1 is SDE-DPM-Solver++'s first-order update r^2 x + (1 - r^2) x0 + sigma' sqrt(1 - r^2) z,
    # eta in general DDIM's x0 + sqrt(sigma'^2 - c^2) eps + c z with c = eta sigma' sqrt(1 - r^2).
    x, v = _xv(8)
    s, s_next = 0.8, 0.45
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    ve, ve_next = s / (1 - s), s_next / (1 - s_next)
    x_ve = x.double() / (1 - s)
    x0 = x.double() - s * v.double()
    eps = (x_ve - x0) / ve
    r = ve_next / ve
    for eta in (1.0, 0.6, 0.0):
        c = eta * ve_next * math.sqrt(1 - r**2)
        expected_ve = x0 + math.sqrt(ve_next**2 - c**2) * eps + c * z.double()
        if eta == 1.0:
            torch.testing.assert_close(expected_ve, r**2 * x_ve + (1 - r**2) * x0 + c * z.double())
        out = ddim_step(x, v, s, s_next, eta, prev_sample=((1 - s_next) * expected_ve).float())
        torch.testing.assert_close(out.prev_sample.double(), (1 - s_next) * expected_ve)
        torch.testing.assert_close(((out.prev_sample - out.mean) / out.std if eta else out.prev_sample - out.mean),
                                   z if eta else torch.zeros(SHAPE), rtol=1e-4, atol=1e-4)
        if eta:
            std = (1 - s_next) * c
            log_prob = (-(z.double() ** 2) / 2 - math.log(std) - 0.5 * math.log(2 * math.pi)).mean(dim=(1, 2, 3))
            torch.testing.assert_close(out.log_prob.double(), log_prob, rtol=1e-5, atol=1e-5)
    # eta 0 is the Euler step; at sigma = 1 the ratio is 0, so eta 1 injects noise of std sigma'
    torch.testing.assert_close(ddim_step(x, v, s, s_next, 0.0).prev_sample, ode_step(x, v, s, s_next).prev_sample)
    assert float(ddim_step(x, v, 1.0, 0.9, 1.0, generator=torch.Generator()).std) == pytest.approx(0.9)
    # the last step to sigma = 0 has no noise: deterministic, x0, with the surrogate log-prob 0 on-policy
    last = ddim_step(x, v, 0.3, 0.0, 1.0, generator=torch.Generator())
    torch.testing.assert_close(last.prev_sample, x - 0.3 * v)
    assert torch.equal(last.log_prob, torch.zeros(SHAPE[0]))


@pytest.mark.parametrize("kind", ["sde", "cps", "ddim"])
def test_stored_transition_rescored_gives_identical_log_prob(kind):
    x, v = _xv(4)
    drawn = flow_step(kind, x, v, 0.6, 0.5, 0.7, sigma_max=0.9, generator=torch.Generator().manual_seed(5))
    again = flow_step(kind, x, v, 0.6, 0.5, 0.7, sigma_max=0.9, prev_sample=drawn.prev_sample)
    assert torch.equal(drawn.log_prob, again.log_prob)  # on-policy ratio exp(0) == 1 exactly
    assert torch.equal(torch.exp(again.log_prob - drawn.log_prob), torch.ones(SHAPE[0]))


def test_per_sample_schedule_values_broadcast():
    x, v = _xv(6)
    sig, nxt = torch.tensor([0.9, 0.5, 0.3]), torch.tensor([0.8, 0.4, 0.2])
    batched = sde_step(x, v, sig, nxt, 0.7, prev_sample=x)
    for i in range(3):
        single = sde_step(x[i:i + 1], v[i:i + 1], float(sig[i]), float(nxt[i]), 0.7, prev_sample=x[i:i + 1])
        torch.testing.assert_close(batched.log_prob[i:i + 1], single.log_prob)


def test_noise_level_zero_reproduces_the_diffusers_euler_sampler_bit_for_bit():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(10)
    sigmas = scheduler.sigmas
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    ref, sde, cps = x0.clone(), x0.clone(), x0.clone()
    for i, t in enumerate(scheduler.timesteps):
        ref = scheduler.step(_velocity(ref, sigmas[i]), t, ref).prev_sample
        sde = sde_step(sde, _velocity(sde, sigmas[i]), sigmas[i], sigmas[i + 1], 0.0, sigma_max=sigmas[1]).prev_sample
        cps = cps_step(cps, _velocity(cps, sigmas[i]), sigmas[i], sigmas[i + 1], 0.0).prev_sample
    assert torch.equal(sde, ref)
    torch.testing.assert_close(cps, ref, rtol=1e-5, atol=1e-5)  # equal in exact arithmetic
    out = ode_step(x0, _velocity(x0, sigmas[0]), sigmas[0], sigmas[1])
    assert torch.equal(out.prev_sample, x0 + (sigmas[1] - sigmas[0]) * _velocity(x0, sigmas[0]))
    assert torch.equal(out.log_prob, torch.zeros(SHAPE[0]))


def test_unknown_step_type():
    x, v = _xv()
    with pytest.raises(ValueError, match="unknown step type 'euler'"):
        flow_step("euler", x, v, 0.5, 0.4, 0.7)


def test_dpm2_solver_beats_euler_on_an_exact_gaussian_flow():
    """Data N(m, s^2): the probability-flow ODE from x_1 = eps ends exactly at m + s eps."""
    from genrl.sampling.rollout import rollout

    m, s = 0.7, 0.3

    def velocity(x, t):
        t = float(t)
        x0_mean = m + (1 - t) * s**2 / ((1 - t) ** 2 * s**2 + t**2) * (x - (1 - t) * m)
        return (x - x0_mean) / t

    eps = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    exact = m + s * eps
    sigmas = torch.linspace(1, 0, 11)
    errors = {}
    for solver in ("euler", "dpm2"):
        traj = rollout(velocity, eps, sigmas, window=(0, 0), ode_solver=solver)
        errors[solver] = (traj.final - exact).abs().max().item()
    assert errors["dpm2"] < errors["euler"] / 3
    finer = rollout(velocity, eps, torch.linspace(1, 0, 41), window=(0, 0), ode_solver="dpm2")
    assert (finer.final - exact).abs().max().item() < errors["dpm2"] / 4  # and it converges
