"""toolprm.reward"""
