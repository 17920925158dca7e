"""placeholder"""
def add_step_arguments(p): pass
