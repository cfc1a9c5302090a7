"""toolprm.bench"""
