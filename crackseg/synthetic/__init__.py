"""Synthetic electrode phantoms with known labels, instances and damage law.

>>> from crackseg.synthetic import generate_electrode, sparse_labels, write_phantom
"""

from crackseg.synthetic.generate import Phantom, generate_electrode
from crackseg.synthetic.output import write_phantom
from crackseg.synthetic.sparse import sparse_labels

__all__ = ["Phantom", "generate_electrode", "sparse_labels", "write_phantom"]
