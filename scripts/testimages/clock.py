"""The fixed times the hand-made images are stamped with, so that they come out the
same every time: layer N of an image uses T0 + N * 1000.
"""


T0 = 1600000000  # 2020-09-13
T1990 = 631152000  # 1990-01-01
