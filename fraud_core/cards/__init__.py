"""The card-transactions contract: raw transactions (card, terminal, time, amount, label).

`definition` holds the behavioural features' one definition; the offline path computes them for
a whole history at once, the online state one transaction at a time, with the same values.
"""
