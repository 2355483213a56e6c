"""The hand-derived gradients (vae_core.hand_gradients) equal autograd's."""
import pytest
import torch

from baselines import MonteCarloEM, WakeSleep
from vae_core import OptimizerConfig

from vae_core import ModelConfig, VariationalAutoEncoder
from vae_core.hmc import hmc_step
from vae_core.hand_gradients import DecoderLogJoint, encoder_log_density_gradient_, posterior_target


@pytest.mark.parametrize("decoder,x_dim", [("bernoulli", 784), ("gaussian", 560)])
def test_value_and_gradient_equal_autograd_of_the_models_log_joint(decoder, x_dim):
    torch.manual_seed(0)
    model = VariationalAutoEncoder(ModelConfig(x_dim, 3, 40, decoder, init_std=0.3)).double()
    x = torch.rand(11, x_dim, dtype=torch.float64)
    z = torch.randn(11, 3, dtype=torch.float64, requires_grad=True)
    expected = model.log_joint(x, z)
    (expected_grad,) = torch.autograd.grad(expected.sum(), z)
    target = DecoderLogJoint(model, x)
    value, grad = target.value_and_grad(z.detach())
    assert torch.allclose(value, expected.detach(), rtol=1e-12, atol=1e-9)
    assert torch.allclose(grad, expected_grad, rtol=1e-10, atol=1e-10)
    none, grad_only = target.value_and_grad(z.detach(), need_value=False)
    assert none is None and torch.equal(grad_only, grad)
    assert torch.equal(target(z.detach()), value)


def test_hmc_with_the_hand_derived_gradient_moves_like_autograd():
    """Same momentum and uniforms: the transition with DecoderLogJoint equals the autograd one."""
    torch.manual_seed(1)
    model = VariationalAutoEncoder(ModelConfig(784, 3, 40, "bernoulli", init_std=0.3)).double()
    x = torch.rand(50, 784, dtype=torch.float64).round()
    z = torch.randn(50, 3, dtype=torch.float64)
    moves = []
    for target in (DecoderLogJoint(model, x), lambda z: model.log_joint(x, z)):
        torch.manual_seed(2)
        moves.append(hmc_step(target, z, 0.05, 10))
    assert torch.allclose(moves[0].z, moves[1].z, atol=1e-10)
    assert torch.equal(moves[0].accepted, moves[1].accepted) and moves[0].accepted.any()
    assert torch.allclose(moves[0].logp, moves[1].logp, atol=1e-8)


def test_other_models_fall_back_to_autograd():
    class Linear(torch.nn.Module):
        def log_joint(self, x, z):
            return -0.5 * ((x - z) ** 2).sum(-1)

    target = posterior_target(Linear(), torch.zeros(2, 3))
    assert not isinstance(target, DecoderLogJoint) and target(torch.ones(2, 3)).shape == (2,)


@pytest.mark.parametrize("decoder,x_dim", [("bernoulli", 784), ("gaussian", 560)])
def test_decoder_parameter_gradient_equals_autograd(decoder, x_dim):
    torch.manual_seed(3)
    model = VariationalAutoEncoder(ModelConfig(x_dim, 3, 40, decoder, init_std=0.3)).double()
    x = torch.rand(13, x_dim, dtype=torch.float64)
    z = torch.randn(13, 3, dtype=torch.float64)
    expected = model.log_joint(x, z).mean()
    (-expected).backward()
    autograd = {name: p.grad.clone() for name, p in model.decoder.named_parameters()}
    model.zero_grad(set_to_none=True)
    target = DecoderLogJoint(model, x)
    value = (target.decoder_gradient_(z) + target.log_prior(z)).mean()
    assert float(value) == pytest.approx(float(expected), rel=1e-12)
    for name, p in model.decoder.named_parameters():
        assert torch.allclose(p.grad, autograd[name], rtol=1e-9, atol=1e-12), name
    assert all(p.grad is None for p in model.encoder.parameters())


def test_encoder_log_density_gradient_equals_autograd():
    torch.manual_seed(4)
    model = VariationalAutoEncoder(ModelConfig(784, 5, 40, "bernoulli", init_std=0.3)).double()
    x = torch.rand(9, 784, dtype=torch.float64).round()
    z = torch.randn(9, 5, dtype=torch.float64)
    expected = model.encoder(x).log_prob(z).mean()
    (-expected).backward()
    autograd = {name: p.grad.clone() for name, p in model.encoder.named_parameters()}
    model.zero_grad(set_to_none=True)
    value = encoder_log_density_gradient_(model.encoder, x, z)
    assert float(value) == pytest.approx(float(expected), rel=1e-12)
    for name, p in model.encoder.named_parameters():
        assert torch.allclose(p.grad, autograd[name], rtol=1e-9, atol=1e-12), name


@pytest.mark.parametrize("algorithm", [WakeSleep, MonteCarloEM])
@pytest.mark.parametrize("decoder,x_dim", [("bernoulli", 784), ("gaussian", 560)])
def test_the_baselines_train_the_same_with_hand_gradients_as_with_autograd(algorithm, decoder, x_dim):
    """Same seed, same random numbers: the two gradient paths give one trajectory (float64)."""
    x = torch.rand(200, x_dim, dtype=torch.float64)
    finals = []
    for hand in (True, False):
        torch.manual_seed(5)
        model = VariationalAutoEncoder(ModelConfig(x_dim, 3, 30, decoder, init_std=0.05)).double()
        trained = algorithm(model, 200, OptimizerConfig(0.02, warmup_steps=3), hand_gradients=hand)
        assert trained.hand_gradients is hand
        trained.train_steps(x, 25, 20)
        finals.append(model.state_dict())
    for key in finals[0]:
        assert torch.allclose(finals[0][key], finals[1][key], rtol=1e-7, atol=1e-10), key
