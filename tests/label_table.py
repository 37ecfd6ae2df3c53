"""A stand-in for the label contract of nkstream.prefixes.PrefixTable that
Rules.compile uses (labels[0] is None; label_id interns a name, adding it if new),
so rule tests control exactly which peer labels exist."""


class LabelTable:
    def __init__(self, *names):
        self.labels = [None]
        for n in names:
            self.label_id(n)

    def label_id(self, name):
        if name not in self.labels:
            self.labels.append(name)
        return self.labels.index(name)
