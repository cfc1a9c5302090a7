"""toolprm.train"""
