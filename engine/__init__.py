"""toolprm.engine"""
