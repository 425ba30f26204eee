"""Preference training from the judged pool: pairs of a prompt's best and worst samples, trained with DPO.

    pairs.py   per prompt, chosen-vs-rejected pairs from the judgements (gap, ties, statuses, cap)
    train.py   TRL's DPOTrainer on the pairs, as a LoRA adapter (the reference needs no second copy)
    loop.py    PreferenceRun: the ReST loop whose Improve makes pairs and whose fine-tune is DPO
"""
