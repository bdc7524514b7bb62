import torch

from rewards import classification_uncertainty, regression_uncertainty, uncertainty_weighted_loss


def test_identical_predictions_have_zero_uncertainty_and_unit_weight():
    c = torch.randn(2, 8, 8)
    u = regression_uncertainty(c, c.clone())
    assert torch.equal(u, torch.zeros_like(u))
    loss = torch.rand(2, 8, 8)
    weighted, reg = uncertainty_weighted_loss(loss, u)
    torch.testing.assert_close(weighted, loss.mean(dim=(1, 2)).mean())
    assert reg == 0


def test_uncertainty_is_nonnegative_and_kl_matches_library():
    a, b = torch.randn(3, 5, 4, 4), torch.randn(3, 5, 4, 4)
    u = classification_uncertainty(a, b, scale=0.1)
    assert (u >= 0).all() and ((torch.exp(-u) > 0) & (torch.exp(-u) <= 1)).all()
    lib = torch.nn.functional.kl_div(torch.log_softmax(a, 1), torch.softmax(b, 1), reduction="none").sum(1)
    torch.testing.assert_close(u, 0.1 * lib)


def test_rows_past_t_max_contribute_nothing():
    loss, u = torch.rand(4, 6), torch.rand(4, 6)
    t = torch.tensor([100, 500, 300, 900])
    w, r = uncertainty_weighted_loss(loss, u, t, t_max=400)
    keep = torch.tensor([0, 2])
    torch.testing.assert_close(w, (torch.exp(-u[keep]) * loss[keep]).mean(1).mean())
    torch.testing.assert_close(r, u[keep].mean(1).mean())


def test_uncertainty_is_not_detached():
    c1 = torch.randn(2, 4, requires_grad=True)
    c2 = torch.randn(2, 4)
    target = torch.randn(2, 4)
    u = regression_uncertainty(c1, c2)
    w, r = uncertainty_weighted_loss((c1 - target) ** 2, u)
    (grad_reg,) = torch.autograd.grad(r, c1, retain_graph=True)
    assert grad_reg.abs().sum() > 0
    (grad_w,) = torch.autograd.grad(w, c1)
    plain = torch.autograd.grad(((c1 - target) ** 2 * torch.exp(-u.detach())).mean(), c1)[0]
    assert not torch.allclose(grad_w, plain)  # exp(-U) passes gradient too


def test_ignored_pixels_are_excluded():
    loss, u = torch.rand(1, 4), torch.zeros(1, 4)
    valid = torch.tensor([[1, 1, 0, 0]])
    w, _ = uncertainty_weighted_loss(loss, u, valid=valid)
    torch.testing.assert_close(w, loss[0, :2].mean())
