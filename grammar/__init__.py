"""toolprm.grammar"""
