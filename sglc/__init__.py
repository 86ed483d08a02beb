"""sglc"""
