import torch

from explore.models.collate import collate


def test_twenty_adamw_steps_lower_the_loss_on_a_fixed_batch(tiny, examples):
    batch = collate(examples, tiny.processor, with_labels=True, max_length=16, decoder_only=tiny.decoder_only)
    model = tiny.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0]
