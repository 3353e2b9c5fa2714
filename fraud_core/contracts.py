"""The two data contracts a deployment can use, by name (see DESIGN.md, "Data contracts")."""

from __future__ import annotations

#: The Kaggle/ULB credit-card schema (`Time`, `V1`…`V28`, `Amount`, `Class`): `POST /predict`.
KAGGLE = "kaggle"
#: Raw card transactions (card, terminal, time, amount, label): `POST /transactions/score`.
CARDS = "cards"
CONTRACTS: tuple[str, ...] = (KAGGLE, CARDS)
