"""ex11 caught: uses logvar as the standard deviation; the KL is right."""


def vae_latent(mean, logvar, noise):
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar)
    return mean + logvar * noise, kl.flatten(1).sum(1)
